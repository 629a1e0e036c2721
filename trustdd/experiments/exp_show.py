"""Experiments as DVC reports them: the JSON of ``dvc exp show --json`` (read live or from saved files)
turned into one :class:`Experiment` record per commit and per experiment, for the grid and results commands.

DVC 3's format: a list of commits (the first may be ``workspace``), each ``{"rev", "name", "data": {"params":
{"params.yaml": {"data": ...}}, "metrics": {"metrics/metrics.json": {"data": ...}}, "timestamp"}, "error",
"experiments"}``, where ``experiments`` is ``None`` or a list of ``{"name", "executor": {"state"}, "revs":
[{"rev", "name", "data", "error"}]}`` (``state``: queued, running, success, failed; ``executor`` is ``None``
for an experiment run in the workspace).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PARAMS_FILE = "params.yaml"
METRICS_FILE = "metrics/metrics.json"
FINAL_STATES = ("success", "failed")


class ExpShowError(ValueError):
    """``dvc exp show`` failed, or a saved file is not its JSON."""


@dataclass(frozen=True)
class Experiment:
    name: str  # the experiment's name; for a commit, its branch name or short rev
    rev: str
    baseline: str  # the commit an experiment is based on; a commit's own rev
    kind: str  # "experiment", "commit" or "workspace"
    state: str  # queued, running, success or failed ("success" for commits and workspace experiments)
    timestamp: str | None = None
    params: dict = field(default_factory=dict)  # params.yaml as the experiment ran it
    metrics: dict = field(default_factory=dict)  # metrics/metrics.json; empty until it has run
    error: str | None = None
    platform: str | None = None  # where its figures were computed (metrics/platform.json), where known

    @property
    def short(self) -> str:
        return self.baseline[:7]


def _data(entry: dict, kind: str) -> dict:
    data = entry.get("data") or {}
    files = data.get(kind) or {}
    block = files.get(PARAMS_FILE if kind == "params" else METRICS_FILE) or {}
    return block.get("data") or {}


def _error(entry: dict) -> str | None:
    err = entry.get("error")
    if not err:
        return None
    return (err.get("msg") or err.get("type") or str(err)) if isinstance(err, dict) else str(err)


def parse(entries: list) -> list[Experiment]:
    """Every commit and experiment in one ``dvc exp show --json`` output, in DVC's order."""
    if not isinstance(entries, list):
        raise ExpShowError(f"expected the list `dvc exp show --json` prints, got {type(entries).__name__}")
    out: list[Experiment] = []
    for commit in entries:
        if not isinstance(commit, dict) or "rev" not in commit:
            raise ExpShowError(f"not an entry of `dvc exp show --json`: {str(commit)[:80]}")
        rev = commit["rev"]
        kind = "workspace" if rev == "workspace" else "commit"
        out.append(
            Experiment(
                name=commit.get("name") or (rev if kind == "workspace" else rev[:7]),
                rev=rev,
                baseline=rev,
                kind=kind,
                state="success",
                timestamp=(commit.get("data") or {}).get("timestamp"),
                params=_data(commit, "params"),
                metrics=_data(commit, "metrics"),
                error=_error(commit),
            )
        )
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs:
                continue
            last = revs[0]
            state = ((exp.get("executor") or {}).get("state")) or "success"
            out.append(
                Experiment(
                    name=exp.get("name") or last.get("name") or last["rev"][:7],
                    rev=last["rev"],
                    baseline=rev,
                    kind="experiment",
                    state=state,
                    timestamp=(last.get("data") or {}).get("timestamp"),
                    params=_data(last, "params"),
                    metrics=_data(last, "metrics"),
                    error=_error(last),
                )
            )
    return out


def run(args: list[str] = (), cwd: Path | str = ".", timeout: float = 600) -> list:
    """The JSON of ``dvc exp show --json ARGS`` in ``cwd``."""
    cmd = ["dvc", "exp", "show", "--json", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExpShowError(f"`{' '.join(cmd)}` gave no answer in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ExpShowError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise ExpShowError(f"`{' '.join(cmd)}` did not print JSON ({err}): {proc.stdout[:200]!r}") from None


def read_saved(paths: list[Path | str]) -> list:
    """Saved ``dvc exp show --json`` outputs: files, or folders of ``*.json`` files (sorted by name),
    concatenated."""
    entries: list = []
    for path in map(Path, paths):
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise ExpShowError(f"{path}: no saved `dvc exp show --json` output (*.json) there")
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ExpShowError(f"{f}: not a saved `dvc exp show --json` output ({err})") from None
            if not isinstance(data, list):
                raise ExpShowError(f"{f}: expected the list `dvc exp show --json` prints, got {type(data).__name__}")
            entries += data
    return entries
