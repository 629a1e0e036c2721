"""Tools around the pipeline, run by hand or by make: the papers' settings (:mod:`.presets`), many runs
(:mod:`.grid`), tables of results (:mod:`.results`, reading DVC's :mod:`.exp_show`) and offline plots
(:mod:`.plots`)."""
