"""What every stage script shares: params loading and user-facing errors."""

from __future__ import annotations

import sys
from typing import Callable

from trustdd import timing
from trustdd.artifacts import ArtifactError
from trustdd.data.datasets import DataNotFoundError
from trustdd.data.image_sources import ImageSourceError
from trustdd.distill.base import DivergenceError
from trustdd.distributed import ParallelSetupError, RankFailedError
from trustdd.evaluation.training_sets import DistilledSetError
from trustdd.params import ParamsError

USER_ERRORS = (
    ParamsError,
    DataNotFoundError,
    ImageSourceError,
    DivergenceError,  # a distillation whose learned lr or loss ran away: the keys to change, no output
    DistilledSetError,  # evaluate.set names something that is not a readable set
    ArtifactError,  # a damaged intermediate file: the message says how to restore it
    NotImplementedError,
    FileNotFoundError,
    RankFailedError,  # a process of a parallel.nproc > 1 stage failed: its own error is printed above
    ParallelSetupError,  # e.g. more NCCL processes than GPUs on a machine
)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a user error (bad param, missing data) prints one clear message and exits 2."""
    timing.mark_stage()
    try:
        main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
