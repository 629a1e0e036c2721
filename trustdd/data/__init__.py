"""The data stages: the InD dataset (:mod:`.datasets`, decoded by :mod:`.image_sources`), split and
transformed into ``data/prepared/ind.pt`` (:mod:`.prepared`, :mod:`.images`, :mod:`.whitening`), and the
OOD test sets (:mod:`.ood_sets` builds them, :mod:`.ood` is ``data/ood/ood.pt``)."""
