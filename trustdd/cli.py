"""What every stage script shares: params loading and user-facing errors."""

from __future__ import annotations

import sys
from pathlib import Path
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


def usage(main: Callable[[], None]) -> str:
    """A stage's usage: its command, its module's docstring, and where its settings come from."""
    name = Path(sys.argv[0]).stem
    doc = (main.__globals__.get("__doc__") or "").strip()  # the stage module's docstring
    return (f"usage: python -m stages.{name}\n\n{doc}\n\nA stage takes no arguments: it reads params.yaml "
            "(docs/params.md), and `dvc repro` runs it with the stages before it (dvc.yaml).")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a user error (bad param, missing data) prints one clear message and exits 2. ``-h`` or
    ``--help`` prints the usage and runs nothing; any other argument is refused (exit 2) before any work."""
    args = sys.argv[1:] if main.__module__ == "__main__" else []  # the command line is the stage's own
    if args:
        if args in (["-h"], ["--help"]):
            print(usage(main))
            sys.exit(0)
        print(f"error: stages.{Path(sys.argv[0]).stem} takes no arguments, got {' '.join(args)!r} "
              "(-h for its usage)", file=sys.stderr)
        sys.exit(2)
    timing.mark_stage()
    try:
        main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
