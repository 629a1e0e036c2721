"""Train-on-distilled evaluation: the sets trained on (:mod:`.training_sets`), the protocol that trains
and scores the nets (:mod:`.protocol`), the OOD scores (:mod:`.scores`), the metrics (:mod:`.metrics`)
and what is written (:mod:`.report`)."""
