"""Dataset distillation methods, one registry (``METHODS``): ``mtt`` (trajectory matching) and ``dsa``
(gradient matching), each with TrustDD's outlier set S_out when there are outliers.

A method takes a :class:`DistillTask` and returns a :class:`DistilledSet`, whatever it does inside, so
evaluation never needs to know which method made a set. Importing this package registers every method.
"""

from trustdd.distill.base import (
    INITS,
    Method,
    METHODS,
    MIXINGS,
    DistilledSet,
    DistillTask,
    embed,
    initial_sets,
    kmeans_medoids,
)
from trustdd.distill.dsa import PUBLISHED_LOOPS, GradientMatching, gradient_distance, matching_loss
from trustdd.distill.mtt import TrajectoryMatching, trajectory_matching_loss

__all__ = [
    "INITS",
    "Method",
    "METHODS",
    "MIXINGS",
    "PUBLISHED_LOOPS",
    "DistillTask",
    "DistilledSet",
    "GradientMatching",
    "TrajectoryMatching",
    "embed",
    "gradient_distance",
    "initial_sets",
    "kmeans_medoids",
    "matching_loss",
    "trajectory_matching_loss",
]
