"""Grids of experiments: a YAML file under ``grids/`` names the params to vary; one command queues every
combination (a *cell*) as a named DVC experiment, runs DVC's queue, waits, and reports the failed cells.

    python -m trustdd.experiments.grid default [--jobs 2]   # queue, run and wait; exit 1 when a cell failed
    python -m trustdd.experiments.grid default --show       # the cells and their `dvc exp run` commands; runs nothing
    python -m trustdd.experiments.grid --list

A grid file::

    axes:                        # every combination is one cell, named <grid>-<value>-<value>...
      outliers.source: [none, poe]
      ipc: [1, 10]
    set: {evaluate.num_eval: 5}  # the same in every cell (optional)
    preset: cifar10-ipc10        # a preset under presets/ under everything (optional; also usable as an axis)

Each cell is ``dvc exp run --queue -n <grid>-<cell> -S key=value ...`` on the committed code; keys must be
in params.yaml and every cell is validated before anything is queued. Running a grid again skips the cells
whose experiment exists on this commit with the same params, waits for those still queued or running, and
queues again the failed ones. DVC's run cache restores the stages a cell shares with an earlier one.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustdd.experiments import exp_show
from trustdd.experiments.overrides import flatten, hydra_value, merge, unflatten
from trustdd.experiments.presets import PresetError
from trustdd.experiments.presets import load as load_preset
from trustdd.params import ParamsError, params_from_dict

GRIDS = Path("grids")
KEYS = ("axes", "set", "preset", "description")
PRESET_AXIS = "preset"
TASK_STATES = ("Queued", "Running", "Success", "Failed")


class GridError(ValueError):
    """A grid file that does not fit params.yaml, or a grid that cannot run as asked."""


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any]  # dotted params key -> value: preset, then `set`, then this cell's axis values
    params: dict = field(default_factory=dict, compare=False, repr=False)  # params.yaml with the overrides

    def args(self) -> list[str]:
        return [f"{key}={hydra_value(value)}" for key, value in self.overrides.items()]

    def command(self) -> list[str]:
        cmd = ["dvc", "exp", "run", "--queue", "-n", self.name]
        for arg in self.args():
            cmd += ["-S", arg]
        return cmd


def names(folder: Path = GRIDS) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def _label(key: str, value: Any) -> str:
    """A cell's part of the experiment name: strings as they are, other values after their key's last part."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = f"{key.split('.')[-1]}-{'on' if value else 'off'}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(map(str, value))
    else:
        text = f"{key.split('.')[-1]}{value}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._") or "x"


def load(name: str, folder: Path = GRIDS) -> dict:
    path = Path(folder) / f"{name}.yaml"
    if not path.exists():
        raise GridError(f"grid {name!r} not found in {folder}/; valid: {', '.join(names(folder)) or '(none)'}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise GridError(f"{path}: expected a mapping with `axes:`, a mapping of params keys to lists of values")
    if unknown := sorted(set(data) - set(KEYS)):
        raise GridError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(KEYS)}")
    for key, values in data["axes"].items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: axes.{key} = {values!r}; expected a non-empty list of values")
        if len({repr(v) for v in values}) != len(values):
            raise GridError(f"{path}: axes.{key} = {values!r} repeats a value")
    if not isinstance(data.get("set") or {}, dict):
        raise GridError(f"{path}: set = {data['set']!r}; expected a mapping of params keys to values")
    return data


def cells(name: str, folder: Path = GRIDS, params_path: Path = Path("params.yaml"),
          presets_folder: Path = Path("presets")) -> list[Cell]:
    """Every cell of grid ``name``, in the order of its axes, each validated against params.yaml."""
    grid = load(name, folder)
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    known = flatten(base)
    fixed = flatten(grid.get("set") or {})  # nested or dotted keys alike
    axes = dict(grid["axes"])
    presets = axes.pop(PRESET_AXIS, [grid["preset"]] if grid.get("preset") else [None])
    for key in [*fixed, *axes]:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise GridError(f"grid {name!r}: {key!r} is not a key of params.yaml{hint}")
    out: list[Cell] = []
    for preset in presets:
        try:
            preset_flat = flatten(load_preset(preset, presets_folder)) if preset else {}
        except PresetError as err:
            raise GridError(f"grid {name!r}: {err}") from None
        for values in itertools.product(*axes.values()) if axes else [()]:
            chosen = dict(zip(axes, values))
            overrides = {**preset_flat, **fixed, **chosen}
            parts = ([_label(PRESET_AXIS, preset)] if PRESET_AXIS in grid["axes"] else []) + [
                _label(k, v) for k, v in chosen.items()
            ]
            cell_name = "-".join([name, *parts])
            merged = merge(base, unflatten(overrides))
            try:
                params_from_dict(merged)
            except ParamsError as err:
                raise GridError(f"grid {name!r}, cell {cell_name}: {err}") from None
            out.append(Cell(cell_name, overrides, merged))
    if len({c.name for c in out}) != len(out):
        raise GridError(f"grid {name!r}: two cells have the same name; make the axes' values distinct")
    return out


def _same(a: Any, b: Any) -> bool:
    """Params equal as values: DVC may write 1e-4 back as 0.0001 or as the string '1.0e-04'."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


@dataclass(frozen=True)
class Plan:
    skip: list[Cell]  # done on this commit with the same params
    wait: list[Cell]  # already queued or running
    requeue: list[Cell]  # failed, or ran with other params: removed, then queued again
    queue: list[Cell]  # never run on this commit


def plan(grid_cells: list[Cell], experiments: list[exp_show.Experiment], baseline: str) -> Plan:
    """What to do with each cell, given the experiments DVC has on ``baseline`` (newest first per name)."""
    latest: dict[str, exp_show.Experiment] = {}
    for exp in experiments:
        if exp.kind == "experiment" and exp.baseline == baseline:
            latest.setdefault(exp.name, exp)
    skip, wait, requeue, queue = [], [], [], []
    for cell in grid_cells:
        exp = latest.get(cell.name)
        if exp is None:
            queue.append(cell)
        elif exp.state in ("queued", "running"):
            wait.append(cell)
        elif exp.state == "success" and exp.metrics and _same(exp.params, cell.params):
            skip.append(cell)
        else:
            requeue.append(cell)
    return Plan(skip, wait, requeue, queue)


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GridError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def _dirty() -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
    ).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def log_tail(task: str, lines: int = 25) -> str:
    """The end of a task's log, as ``dvc queue logs`` gives it."""
    proc = _dvc("queue", "logs", task, check=False)
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def start_queue(jobs: int) -> None:
    """``dvc queue start --jobs J``, with ``.`` first on PYTHONPATH: each experiment runs in its own copy of
    the project, and its stage scripts must import that copy's ``trustdd`` rather than the installed one
    (the workspace's, which may be edited while the queue runs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(["."] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # the workers it starts keep its stdout and stderr open: a pipe would not close until they exit
    with tempfile.TemporaryFile("w+") as log:
        code = subprocess.call(["dvc", "queue", "start", "--jobs", str(jobs)], stdout=log, stderr=log, env=env)
        if code != 0:
            log.seek(0)
            raise GridError(f"`dvc queue start --jobs {jobs}` failed (exit {code}): {log.read().strip()[-2000:]}")


@dataclass(frozen=True)
class Task:
    id: str
    name: str
    status: str  # Queued, Running, Success or Failed


def queue_status() -> tuple[list[Task], int]:
    """The tasks ``dvc queue status`` lists, and its number of workers (active and idle). It is polled
    rather than ``dvc exp show``, which reads the running experiments' workspaces and can hang when one is
    removed as it finishes."""
    tasks, workers = [], 0
    for line in _dvc("queue", "status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and re.fullmatch(r"[0-9a-f]{7,40}", parts[0]) and parts[-1] in TASK_STATES:
            tasks.append(Task(parts[0], parts[1], parts[-1]))
        elif match := re.match(r"Worker status: (\d+) active, (\d+) idle", line.strip()):
            workers = int(match[1]) + int(match[2])
    return tasks, workers


def wait_for(grid_cells: list[Cell], old: set[str], jobs: int, poll: float, out=sys.stdout) -> dict[str, Task]:
    """Poll DVC's queue until every cell's task (one not in ``old``, the tasks that had finished before
    this run) has finished; print each cell's state when it changes. DVC's workers can stop while tasks
    are still queued (treeverse/dvc#10562): then the queue is started again."""
    seen: dict[str, str] = {}
    start, stalled = time.time(), 0
    while True:
        tasks, workers = queue_status()
        latest: dict[str, Task] = {}
        for task in tasks:
            if task.id not in old:
                latest.setdefault(task.name, task)
        for cell in grid_cells:
            state = latest[cell.name].status if cell.name in latest else "missing"
            if seen.get(cell.name) != state:
                seen[cell.name] = state
                print(f"[{time.time() - start:7.0f} s] {cell.name}: {state}", file=out, flush=True)
        states = set(seen.values())
        if states <= {"Success", "Failed", "missing"}:
            return latest
        # twice in a row: a worker just started may not be counted yet
        stalled = stalled + 1 if "Running" not in states and workers == 0 else 0
        if stalled == 2:
            print(f"[{time.time() - start:7.0f} s] DVC's workers stopped with cells queued; starting them again",
                  file=out, flush=True)
            start_queue(jobs)
            stalled = 0
        time.sleep(poll)


def run(name: str, jobs: int = 1, poll: float = 15.0, wait: bool = True, folder: Path = GRIDS, out=sys.stdout) -> int:
    """Queue the grid's missing cells, start DVC's queue with ``jobs`` workers, wait; 0 when every cell
    succeeded, 1 when one failed (named, with the end of its log)."""
    if jobs < 1:
        raise GridError(f"--jobs {jobs}: expected a number of parallel experiments >= 1")
    grid_cells = cells(name, folder)
    if dirty := _dirty():
        raise GridError(
            "uncommitted changes to tracked files (" + ", ".join(dirty[:8]) + "): a grid runs on a commit, and"
            " skips the cells already done on it. Commit (or stash) them first."
        )
    baseline = _head()
    todo = plan(grid_cells, exp_show.parse(exp_show.run()), baseline)
    print(
        f"grid {name} on {baseline[:7]}: {len(grid_cells)} cells; {len(todo.skip)} done, {len(todo.wait)} queued or"
        f" running, {len(todo.requeue)} to run again, {len(todo.queue)} to queue",
        file=out,
        flush=True,
    )
    for cell in todo.skip:
        print(f"  done: {cell.name}", file=out)
    old = {t.id for t in queue_status()[0] if t.status in ("Success", "Failed")}
    for cell in todo.requeue:  # a failed task, or an experiment with other params, holds the name
        _dvc("queue", "remove", cell.name, check=False)
        _dvc("exp", "remove", cell.name, check=False)
    for cell in todo.requeue + todo.queue:
        print("  " + shlex.join(cell.command()), file=out, flush=True)
        _dvc(*cell.command()[1:])
    running = todo.requeue + todo.queue + todo.wait
    if running and (todo.requeue or todo.queue):
        start_queue(jobs)
    if not wait:
        print(f"started; `dvc queue status` shows progress, `python -m trustdd.experiments.grid {name}` waits", file=out)
        return 0
    final: dict[str, Task] = {}
    if running:
        t0 = time.time()
        final = wait_for(running, old, jobs, poll, out)
        print(f"grid {name}: finished in {time.time() - t0:.0f} s (jobs {jobs})", file=out)
    failed = [c.name for c in running if c.name in final and final[c.name].status != "Success"]
    missing = [c.name for c in running if c.name not in final]
    for cell_name in failed:
        task = final[cell_name].id
        print(f"\nFAILED {cell_name}; its log ends (all of it: dvc queue logs {task}):", file=out)
        print(log_tail(task), file=out)
    if missing:
        print(f"\nno task appeared in `dvc queue status` for: {', '.join(missing)}", file=out)
    if failed or missing:
        print(f"\ngrid {name}: {len(failed) + len(missing)} of {len(grid_cells)} cells failed", file=out)
        return 1
    print(f"grid {name}: all {len(grid_cells)} cells done; tables: python -m trustdd.experiments.results --grid {name}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustdd.experiments.grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="a grid under grids/ (without .yaml)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="experiments run at a time (dvc queue start --jobs)")
    parser.add_argument("--show", action="store_true", help="print the cells' commands; queue nothing")
    parser.add_argument("--list", action="store_true", help="list the grids")
    parser.add_argument("--no-wait", action="store_true", help="queue and start, then return")
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between status checks while waiting")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        print("\n".join(names()))
        return 0 if args.list else 2
    try:
        if args.show:
            for cell in cells(args.name):
                print(shlex.join(cell.command()))
            return 0
        return run(args.name, args.jobs, args.poll, wait=not args.no_wait)
    except (GridError, exp_show.ExpShowError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
