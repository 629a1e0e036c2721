"""Dataset distillation: each method distills S_in (and TrustDD's outlier set S_out when there are
outliers) from the InD images, the outlier pool and, for trajectory matching, the expert trajectories.

:mod:`.base` holds the protocol every method follows (:class:`~.base.Method`, :class:`~.base.DistillTask`),
:mod:`.distilled` what a method returns and the distilled-set file, and :mod:`.methods` registers every
method (``mtt``, ``dsa``) in ``METHODS``. This package imports nothing itself, so that the code that
reads a distilled set (evaluation's :mod:`.distilled`) does not import the methods, and editing a method
does not rerun the evaluate stage (dvc.yaml).
"""
