"""Wall time of the training steps, recorded only for a smoke run of a preset, which extrapolates each
stage's time from it (:mod:`trustdd.experiments.smoke`). Outside a smoke run nothing is recorded, and
nothing recorded ever reaches a stage's outputs: wall time differs run to run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FILE_ENV = "TRUSTDD_TIMING"  # a JSON-lines file the smoke run reads; unset: record() does nothing
STAGE_ENV = "TRUSTDD_STAGE"  # set by the stage's entry point, inherited by its worker processes


def mark_stage() -> None:
    """Name the running stage (``python -m stages.NAME``) for the records of this process and its children."""
    os.environ.setdefault(STAGE_ENV, Path(sys.argv[0]).stem)


def record(units: float, seconds: float, what: str = "train") -> None:
    """Append ``{stage, what, units, seconds}``: ``units`` of work took ``seconds``: InD images through training
    steps after a loop's first, whose warm-up is left out; or the method's :meth:`~trustdd.distill.base.Method.work`
    in the distillation's iterations after its first window)."""
    path = os.environ.get(FILE_ENV)
    if not path or units <= 0:
        return
    line = json.dumps({"stage": os.environ.get(STAGE_ENV, ""), "what": what, "units": units, "seconds": seconds})
    with open(path, "a") as f:  # one short line per write: appends from several processes do not interleave
        f.write(line + "\n")


def read(path: Path) -> dict[str, dict[str, float]]:
    """``{stage: {"units": ..., "seconds": ...}}`` summed over a timing file's records."""
    out: dict[str, dict[str, float]] = {}
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        s = out.setdefault(r["stage"], {"units": 0.0, "seconds": 0.0})
        s["units"] += r["units"]
        s["seconds"] += r["seconds"]
    return out
