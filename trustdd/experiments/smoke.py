"""A smoke run of a preset: every stage, on the user's own files, at the preset's shapes and a tiny budget,
as a temporary DVC experiment (``dvc exp run --temp --force``) that leaves the workspace as it was. It
prints each stage's time and what the full run would cost, extrapolated from it.

    python -m trustdd.experiments.presets run cifar10-ipc10 --smoke [--keep] [-S key=value ...]

What stays the preset's: the dataset and its files (``data.root`` made absolute, since the experiment runs
in a temporary copy), image size, ZCA, the network, ipc, the outliers' source and corruptions, the OOD sets,
the method's shapes (for MTT ``syn_steps``, ``batch_syn``, ``init``, ``memory``: the memory a student step
needs is the full run's). What shrinks (:func:`budget`): the train set (``SMOKE_PER_CLASS`` images per
class, or ipc when larger), two experts of the few epochs the method needs, the method's iterations
(:meth:`~trustdd.distill.base.Method.smoke`), one evaluation net of two epochs, ``SMOKE_OOD`` images per
OOD set. ``-S key=value`` after ``--smoke`` overrides any of these (say ``-S distill.mtt.syn_steps=2`` on a
laptop). The experiment, named ``NAME-smoke``, is removed afterwards unless ``--keep``.

The extrapolation (:func:`extrapolate`) rests on what the stages time themselves during a smoke run
(:mod:`trustdd.timing`): every training loop times its steps after the first (InD images per second, at
the preset's network and batch size), the distillation its iterations after the first. A stage's full
time is that rate times the full run's work (:func:`work`: experts x epochs x train images; evaluation
nets x sets x epochs x set size; the method's work, e.g. MTT's iterations x syn_steps), plus the rest of
its smoke time (imports, reading, the first steps; for evaluate, scaled by its nets, which it scores).
The prepare stages read the same files either way and count once. Small batches use a GPU less well than
full ones, so a GPU estimate errs high; it is an order of magnitude to plan with, on the machine the smoke
ran on.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from trustdd import timing
from trustdd.experiments.overrides import flatten, hydra_value, merge, unflatten
from trustdd.params import Params, ParamsError, params_from_dict

SMOKE_PER_CLASS = 10  # train images per class (ipc when larger: the starting set draws ipc per class)
SMOKE_OOD = 100  # images per OOD set
SMOKE_OE = 500  # real outliers (outliers.oe.max_images), when the preset takes more
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


class SmokeError(ValueError):
    """A smoke run that cannot start: its overrides do not make valid params."""


def budget(full: Params) -> dict[str, Any]:
    """The smoke run's changes to a preset's params (dotted keys): the shapes stay, the budget shrinks."""
    classes = full.dataset_info.num_classes
    limit = classes * max(full.ipc, SMOKE_PER_CLASS)
    out: dict[str, Any] = {
        "data.root": str(full.data_files().root.resolve()),  # the experiment runs in a temporary copy
        "data.train_limit": limit if not full.data.train_limit else min(limit, full.data.train_limit),
        "experts.num_experts": 2,
        "experts.epochs": 1,
        "ood.size": min(full.ood.size, SMOKE_OOD),
        "evaluate.num_eval": 1,
        "evaluate.epochs": 2,
    }
    if full.evaluate.full_data_epochs:
        out["evaluate.full_data_epochs"] = 1
    if full.outliers.per_type:
        out["outliers.per_type"] = min(full.outliers.per_type, limit)  # >= ipc x classes: the set's outliers
    oe = full.outliers.oe
    if full.outliers.source == "oe":
        out["outliers.oe.max_images"] = min(oe.max_images or SMOKE_OE, SMOKE_OE)
        if oe.path and not Path(oe.path).is_absolute():
            out["outliers.oe.path"] = str(Path(oe.path).resolve())
    if any(not Path(u.path).is_absolute() for u in full.ood.user):
        out["ood.user"] = [{**asdict(u), "path": str(Path(u.path).resolve())} for u in full.ood.user]
    out.update(full.method_config().smoke())
    return out


def work(p: Params, n_train: int | None) -> dict[str, float | None]:
    """The measured stages' work, in the units their timing records count (:mod:`trustdd.timing`): InD
    images through training steps (train_experts, evaluate) and the method's work (distill); None where it
    depends on the number of train images and that is unknown."""
    n = p.data.train_limit or n_train
    set_size = p.ipc * p.dataset_info.num_classes  # InD images of each evaluated set (outliers ride along)
    sets = 1 + p.evaluate.init_baseline + p.evaluate.random_baseline
    nets = p.evaluate.num_eval * len(p.evaluate.architectures)
    return {
        "train_experts": None if n is None else float(p.experts.num_experts * p.experts.epochs * n),
        "distill": p.method_config().work(p.ipc),
        "evaluate": None if n is None else float(nets * (sets * p.evaluate.epochs * set_size
                                                          + p.evaluate.full_data_epochs * n)),
    }


def per_net(p: Params) -> dict[str, float]:
    """What scales a measured stage's time outside its timed steps: evaluate scores every net it trains;
    the rest (imports, reading files, the first steps) is taken as fixed."""
    return {"evaluate": float(p.evaluate.num_eval * len(p.evaluate.architectures))}


def split_user_overrides(extra: list[str]) -> tuple[dict[str, str], list[str]]:
    """``-S key=value`` pairs (raw Hydra strings, by key) and the other ``dvc exp run`` options."""
    sets: dict[str, str] = {}
    rest: list[str] = []
    it = iter(extra)
    for arg in it:
        if arg in ("-S", "--set-param"):
            value = next(it, None)
            if value is None or "=" not in value:
                raise SmokeError(f"{arg}: expected key=value, got {value!r}")
            key, _, raw = value.partition("=")
            sets[key] = raw
        else:
            rest.append(arg)
    return sets, rest


@dataclass(frozen=True)
class Plan:
    """What a smoke run will do: the experiment's name, its ``-S`` overrides, both runs' params."""

    name: str
    overrides: list[str]  # key=value, Hydra grammar: the preset's, the budget's, then the user's
    full: Params
    smoke: Params


def plan(name: str, preset: dict, base: dict, user: dict[str, str]) -> Plan:
    """The smoke run of ``preset`` (a mapping of params keys) applied to ``base`` (params.yaml's mapping),
    with the user's own ``-S`` overrides last; SmokeError when the result is not valid params."""
    try:
        full = params_from_dict(merge(base, preset))
        flat = {**flatten(preset), **budget(full)}
        parsed_user = {k: yaml.safe_load(v) for k, v in user.items()}
        smoke = params_from_dict(merge(merge(base, unflatten(flat)), unflatten(parsed_user)))
    except ParamsError as err:
        raise SmokeError(f"smoke run of {name!r}: {err}") from None
    overrides = [f"{k}={hydra_value(v)}" for k, v in flat.items() if k not in user]
    overrides += [f"{k}={v}" for k, v in user.items()]
    return Plan(f"{name}-smoke", overrides, full, smoke)


def stage_times(lines, clock=time.monotonic, echo=print) -> dict[str, float]:
    """Seconds per stage from ``dvc exp run``'s output lines (each stage starts at its ``Running stage``
    line and ends where the next starts, or the output ends); every line is echoed."""
    starts: list[tuple[str, float]] = []
    for line in lines:
        echo(line.rstrip("\n"))
        m = STAGE_LINE.match(line)
        if m:
            starts.append((m.group(1), clock()))
    end = clock()
    return {stage: (starts[i + 1][1] if i + 1 < len(starts) else end) - t for i, (stage, t) in enumerate(starts)}


def extrapolate(times: dict[str, float], steps: dict[str, dict[str, float]], smoke: Params, full: Params,
                n_train: int | None) -> list[dict]:
    """One row per stage: its smoke time, and the full run's: the timed steps' rate times the full run's work,
    plus the rest of the stage's time (scaled per net for evaluate); a stage without timed steps (the
    prepare stages read the same files either way) counts once. ``full_s`` None: unknown work."""
    work_f = work(full, n_train)
    nets_s, nets_f = per_net(smoke), per_net(full)
    rows = []
    for stage, seconds in times.items():
        timed = steps.get(stage)
        if timed is None or not timed["units"]:
            rows.append({"stage": stage, "smoke_s": seconds, "full_s": seconds, "how": "x1"})
            continue
        rate = timed["seconds"] / timed["units"]
        rest = max(0.0, seconds - timed["seconds"]) * nets_f.get(stage, 1.0) / nets_s.get(stage, 1.0)
        units = work_f.get(stage)
        if units is None:
            rows.append({"stage": stage, "smoke_s": seconds, "full_s": None, "how": "train images unknown"})
            continue
        rows.append({"stage": stage, "smoke_s": seconds, "full_s": rest + rate * units,
                     "how": f"{rate * 1e3:.3g} ms/unit x {units:.3g}"})
    return rows


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def report(p: Plan, rows: list[dict], device: str) -> str:
    lines = [f"{'stage':<18}{'smoke':>9}{'full run':>12}  how"]
    for r in rows:
        lines.append(f"{r['stage']:<18}{r['smoke_s']:>8.1f}s{duration(r['full_s']):>12}  {r['how']}")
    known = [r["full_s"] for r in rows if r["full_s"] is not None]
    unknown = len(known) < len(rows)
    lines.append(f"{'total':<18}{sum(r['smoke_s'] for r in rows):>8.1f}s"
                 f"{('>= ' if unknown else '') + duration(sum(known)):>12}")
    lines.append(
        f"full run of {p.name.removesuffix('-smoke')} on {device}, extrapolated from the smoke run's timed steps "
        "(trustdd/experiments/smoke.py says how): an order of magnitude to plan with"
        + ("; ?: the train set's size could not be read without decoding it" if unknown else "")
    )
    return "\n".join(lines)


def train_count(p: Params) -> int | None:
    try:
        return p.dataset_info.source.train_count(p.data_files().root)
    except (OSError, ValueError, KeyError):
        return None


def run(name: str, preset: dict, base: dict, extra: list[str], keep: bool = False) -> int:
    """Run the smoke experiment; returns its exit status (DVC's, or 2 when it cannot start)."""
    from trustdd.runtime import resolve_device  # imports torch: not for `presets list` / `show`

    user, rest = split_user_overrides(extra)
    p = plan(name, preset, base, user)
    n_train = train_count(p.full)
    cmd = ["dvc", "exp", "run", "--temp", "--force", "-n", p.name]
    for o in p.overrides:
        cmd += ["-S", o]
    cmd += rest
    print(f"smoke run of {name}: {p.smoke.net_spec()}, ipc {p.smoke.ipc}, train images {p.smoke.data.train_limit}"
          f" of {n_train if n_train is not None else '?'}", flush=True)
    print(" ".join(cmd), flush=True)
    with tempfile.TemporaryDirectory(prefix="trustdd-smoke-") as tmp:
        record = Path(tmp) / "steps.jsonl"
        env = dict(os.environ, **{timing.FILE_ENV: str(record)})
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        assert proc.stdout is not None
        times = stage_times(proc.stdout, echo=lambda line: print(line, flush=True))
        code = proc.wait()
        steps = timing.read(record)
    if code != 0:
        print(f"smoke run of {name} failed (exit {code}) in stage {next(reversed(times), '?')}; the workspace is "
              "unchanged", file=sys.stderr)
        return code
    rows = extrapolate(times, steps, p.smoke, p.full, n_train)
    print(report(p, rows, str(resolve_device(p.smoke.device))))
    if keep:
        print(f"kept as experiment {p.name} (dvc exp show lists it); dvc exp remove {p.name} when done")
    else:
        subprocess.run(["dvc", "exp", "remove", p.name], check=False, stdout=subprocess.DEVNULL)
    return 0
