"""Every distillation method, registered in ``METHODS`` by importing this module: ``mtt`` (trajectory
matching, :mod:`.mtt`) and ``dsa`` (gradient matching, :mod:`.dsa`). A new method is a new module here
(docs/extending.md) and one line in the import list below."""

from trustdd.distill.base import (
    INITS,
    METHODS,
    MIXINGS,
    DistillTask,
    Method,
    embed,
    initial_sets,
    kmeans_medoids,
)
from trustdd.distill.distilled import DistilledFile, DistilledSet, StartingSets
from trustdd.distill.dsa import PUBLISHED_LOOPS, GradientMatching, gradient_distance, matching_loss
from trustdd.distill.mtt import TrajectoryMatching, trajectory_matching_loss

__all__ = [
    "INITS",
    "Method",
    "METHODS",
    "MIXINGS",
    "PUBLISHED_LOOPS",
    "DistillTask",
    "DistilledFile",
    "DistilledSet",
    "StartingSets",
    "GradientMatching",
    "TrajectoryMatching",
    "embed",
    "gradient_distance",
    "initial_sets",
    "kmeans_medoids",
    "matching_loss",
    "trajectory_matching_loss",
]
