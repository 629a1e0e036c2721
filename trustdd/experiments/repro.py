"""Are the workspace's results the committed ones? Exact where the platform matches, within their noise where not.

    dvc repro --force && python -m trustdd.experiments.repro check       # what `make repro-check` runs
    python -m trustdd.experiments.repro check --rev HEAD~1 --alpha 0.01

Compares what the last run wrote with what commit ``--rev`` holds (read with ``git show``), in one of two
ways, and says which and why:

- **exact**, when the run's ``metrics/platform.json`` equals the committed one field for field
  (:class:`trustdd.platform.Platform`): ``dvc.lock`` (every output's md5) and every file under ``metrics/``
  must be byte-identical. Same seed, same params, same platform: same bytes.
- **within tolerance**, when the platforms differ (or the commit has no platform record): ``dvc.lock`` must
  agree on everything that is not a computed hash (each stage's command, code and param dependencies,
  outputs), and every mean of ``metrics/metrics.json`` must lie within its tolerance of the committed one.
  Another CPU or torch rounds differently, training amplifies the first differing bit, and a rerun is then
  a fresh draw of the evaluation nets' noise (and of the distilled set's), not the same numbers.

The tolerance of a mean over ``n`` evaluation nets (``evaluate.num_eval``) is ``z * s * sqrt(2 / n)``: the
difference of two independent means of ``n`` nets, each net with spread ``s``, has standard error
``s * sqrt(2 / n)``. ``s`` is the net-to-net spread of that metric measured in the two runs, pooled over
their training sets (distilled, init, random: the sample variance, ``n / (n - 1)`` times the population
variance that metrics.json stores, averaged over the 2 x 3 sets) so that it rests on ``6 (n - 1)`` degrees
of freedom rather than on 2 nets' luck; a paired gain (``distilled_minus_*``) is pooled over the paired rows,
whose std is already the paired spread. ``z`` is the two-sided Student-t quantile for those degrees of
freedom at ``alpha / M``, M the number of compared means (Bonferroni): with ``--alpha 0.01`` a rerun whose
nets are drawn afresh fails at most once in a hundred across all its metrics. docs/pipeline.md
(Reproducibility) gives the measured cross-platform differences against these tolerances.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml
from scipy.stats import t as student_t

from trustdd.platform import PATH as PLATFORM_PATH
from trustdd.platform import Platform

LOCK, METRICS, METRICS_DIR = "dvc.lock", "metrics/metrics.json", "metrics"
HASH_KEYS = ("md5", "size", "nfiles", "hash")  # what dvc.lock computes from a file's bytes
ALPHA = 0.01


class ReproError(RuntimeError):
    """Something to compare is missing: no git, no such commit, a file the run did not write."""


@dataclass(frozen=True)
class Row:
    """One compared mean."""

    metric: str  # "distilled/convnet/msp/fpr95_in"
    committed: float
    new: float
    tolerance: float

    @property
    def diff(self) -> float:
        return self.new - self.committed

    @property
    def ok(self) -> bool:
        return math.isfinite(self.new) and abs(self.diff) <= self.tolerance


def means(metrics: dict) -> dict[str, tuple[float, float]]:
    """``{"distilled/convnet/accuracy": (mean, population std), ...}`` for every mean in metrics.json."""
    out: dict[str, tuple[float, float]] = {}

    def walk(block: dict, prefix: str) -> None:
        for key, value in block.items():
            if isinstance(value, dict) and "mean" in value:
                out[f"{prefix}{key}"] = (float(value["mean"]), float(value.get("std", 0.0)))
            elif isinstance(value, dict):
                walk(value, f"{prefix}{key}/")

    walk(metrics, "")
    return out


def _family(metric: str) -> tuple[str, str]:
    """(kind, metric without the training set): the means whose nets' spreads are pooled together."""
    training_set, _, rest = metric.partition("/")
    return ("paired" if training_set.startswith("distilled_minus_") else "set"), rest


def compare(committed: dict, new: dict, n: int, alpha: float = ALPHA) -> tuple[list[Row], list[str]]:
    """Every mean of ``committed`` against ``new`` (two metrics.json), each with its tolerance (see the module
    docstring); and the problems that make the comparison itself fail (a mean in one file only)."""
    if n < 2:
        raise ReproError(f"evaluate.num_eval: {n} net per set has no spread to derive a tolerance from; "
                         "the cross-platform check needs num_eval >= 2")
    ref, run = means(committed), means(new)
    problems = [f"{m}: in the committed metrics.json only" for m in sorted(set(ref) - set(run))]
    problems += [f"{m}: in the new metrics.json only" for m in sorted(set(run) - set(ref))]
    shared = [m for m in ref if m in run]
    variances: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in shared:
        for _, std in (ref[m], run[m]):
            variances[_family(m)].append(std**2 * n / (n - 1))  # population -> sample variance
    rows = []
    for m in shared:
        pool = variances[_family(m)]
        s = math.sqrt(sum(pool) / len(pool))
        z = student_t.ppf(1 - alpha / (2 * len(shared)), len(pool) * (n - 1))
        rows.append(Row(m, ref[m][0], run[m][0], z * s * math.sqrt(2 / n)))
    return rows, problems


def lock_problems(committed: dict, new: dict) -> list[str]:
    """What differs between two dvc.lock files beyond the hashes of computed outputs: a stage's command,
    params, code dependencies or the list of its outputs. A dependency that is another stage's output (or
    lies under one) is computed too, so only its path is compared."""
    outputs = {o["path"] for lock in (committed, new) for body in lock.get("stages", {}).values() for o in body.get("outs", [])}

    def computed(path: str) -> bool:
        return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outputs)

    def shape(body: dict) -> dict:
        return {
            "cmd": body.get("cmd"),
            "params": body.get("params"),
            "deps": [d if not computed(d["path"]) else {"path": d["path"]} for d in body.get("deps", [])],
            "outs": [{k: v for k, v in o.items() if k not in HASH_KEYS} for o in body.get("outs", [])],
        }

    a, b = committed.get("stages", {}), new.get("stages", {})
    problems = [f"stage {s}: in the committed dvc.lock only" for s in a if s not in b]
    problems += [f"stage {s}: in the new dvc.lock only" for s in b if s not in a]
    for stage in (s for s in a if s in b):
        sa, sb = shape(a[stage]), shape(b[stage])
        problems += [f"stage {stage}: its {key} differ from the committed dvc.lock" for key in sa if sa[key] != sb[key]]
    return problems


def _git(*args: str, root: Path) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise ReproError("git is not installed: the committed results are read from git") from err
    if proc.returncode:
        raise ReproError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def verify_rev(rev: str, root: Path) -> None:
    """A bad rev is an error, not a commit that lacks every file."""
    try:
        _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", root=root)
    except ReproError as err:
        raise ReproError(f"--rev: {rev!r} is not a commit of this repository") from err


def committed_text(rev: str, path: str, root: Path) -> str | None:
    """``path`` as commit ``rev`` (verified by :func:`verify_rev`) holds it, or None where it does not."""
    try:
        return _git("show", f"{rev}:{path}", root=root)
    except ReproError:
        return None


def changed_files(rev: str, root: Path) -> list[str]:
    """Files under dvc.lock and metrics/ that differ from ``rev`` or that ``rev`` does not have (not ignored)."""
    paths = [LOCK, METRICS_DIR]
    diff = _git("diff", "--name-only", rev, "--", *paths, root=root).split()
    return sorted(set(diff) | set(_git("ls-files", "--others", "--exclude-standard", "--", *paths, root=root).split()))


def _read(root: Path, path: str) -> str:
    file = root / path
    if not file.exists():
        raise ReproError(f"{path} does not exist: run the pipeline first (`dvc repro --force`)")
    return file.read_text()


def check(rev: str = "HEAD", root: Path | str = ".", alpha: float = ALPHA, out=sys.stdout) -> bool:
    """Print which check applies and its outcome, line by line; True when the results pass it."""
    root = Path(root)
    new_platform = Platform.from_dict(json.loads(_read(root, PLATFORM_PATH)))
    verify_rev(rev, root)
    old_text = committed_text(rev, PLATFORM_PATH, root)
    old_platform = Platform.from_dict(json.loads(old_text)) if old_text else None
    say = lambda line="": print(line, file=out)  # noqa: E731
    say(f"this run's platform:   {new_platform.summary()}")
    say(f"{rev}'s platform: {old_platform.summary() if old_platform else f'not recorded ({PLATFORM_PATH} absent)'}")
    if old_platform == new_platform:
        changed = changed_files(rev, root)
        say(f"repro-check: the same platform, so the check is exact: {LOCK} and {METRICS_DIR}/ byte for byte against {rev}")
        for path in changed:
            say(f"  differs: {path}")
        say(f"repro-check: {'FAILED' if changed else 'passed'}: "
            + (f"{len(changed)} file(s) differ from {rev}" if changed else "byte-identical"))
        return not changed
    if old_platform:
        for key, (old, new) in old_platform.differences(new_platform).items():
            say(f"  platform differs in {key}: {old!r} (committed) -> {new!r} (this run)")
    committed_metrics, committed_lock = (committed_text(rev, p, root) for p in (METRICS, LOCK))
    if committed_metrics is None or committed_lock is None:
        raise ReproError(f"{rev} holds no {METRICS if committed_metrics is None else LOCK}: nothing to compare with")
    n = yaml.safe_load(_read(root, "params.yaml"))["evaluate"]["num_eval"]
    rows, problems = compare(json.loads(committed_metrics), json.loads(_read(root, METRICS)), n, alpha)
    problems = lock_problems(yaml.safe_load(committed_lock), yaml.safe_load(_read(root, LOCK))) + problems
    say(f"repro-check: another platform, so the check is statistical: every mean of {METRICS} within "
        f"z * s * sqrt(2/n) of {rev}'s (n = {n} nets, family-wise alpha {alpha}; trustdd/experiments/repro.py)")
    width = max(len(r.metric) for r in rows) if rows else 10
    say(f"  {'metric':<{width}}  {'committed':>10}  {'this run':>10}  {'diff':>8}  {'tolerance':>9}")
    for r in rows:
        say(f"  {r.metric:<{width}}  {r.committed:>10.4f}  {r.new:>10.4f}  {r.diff:>+8.4f}  {r.tolerance:>9.4f}"
            f"{'' if r.ok else '  BEYOND'}")
    for problem in problems:
        say(f"  {problem}")
    failed = [r for r in rows if not r.ok]
    worst = max(rows, key=lambda r: abs(r.diff) / r.tolerance if r.tolerance else math.inf, default=None)
    say(f"repro-check: {'FAILED' if failed or problems else 'passed'}: {len(rows) - len(failed)}/{len(rows)} means "
        f"within tolerance" + (f" (closest: {worst.metric}, {abs(worst.diff) / worst.tolerance:.2f} of its tolerance)"
                                if worst and worst.tolerance else "")
        + (f"; {len(problems)} dvc.lock/metrics mismatch(es)" if problems else ""))
    return not failed and not problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="compare the last run's results with a commit's (after `dvc repro --force`)")
    c.add_argument("--rev", default="HEAD", help="the commit whose results to compare with (default HEAD)")
    c.add_argument("--alpha", type=float, default=ALPHA, help=f"family-wise false-alarm rate (default {ALPHA})")
    args = ap.parse_args(argv)
    if not 0 < args.alpha < 1:
        ap.error(f"--alpha: invalid value {args.alpha}; expected a number between 0 and 1")
    try:
        return 0 if check(args.rev, alpha=args.alpha) else 1
    except (ReproError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
