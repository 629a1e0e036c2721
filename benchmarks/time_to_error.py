"""How long a user waits for a bad-input error, and which stages ran before it.

    python benchmarks/time_to_error.py                    # the committed default at HEAD
    python benchmarks/time_to_error.py --rev e89a4df --cases missing_set pixelate_factor

Clones the project at ``--rev`` into a scratch folder that shares this project's DVC cache, checks the
committed outputs out (so the pipeline is up to date, as after `dvc repro`), then for each case runs
``dvc exp run -S ...`` from that state and records the seconds to the command's end, its exit code,
the stages DVC started and the error line. Prints one JSON line per case (and appends them to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# name -> (what the case is, the `-S` overrides); files under runs/ are made by `prepare` below
CASES = {
    "missing_set": ("2: evaluate.set names a file that does not exist", ["evaluate.set=runs/missing.pt"]),
    "missing_set_upstream": (
        "2: the same, with an upstream stage out of date",
        ["outliers.per_type=1500", "evaluate.set=runs/missing.pt"],
    ),
    "truncated_set": ("2: evaluate.set is a truncated .pt", ["evaluate.set=runs/cut.pt"]),
    "empty_folder": ("2: evaluate.set is a folder without images", ["evaluate.set=runs/empty"]),
    "misspelt_key": ("3: a misspelt top-level key", ["+lamda_oe=0.1"]),
    "other_methods_key": ("3: a misspelt key in the section of the method not chosen", ["+distill.dsa.iteration=3"]),
    "pixelate_factor": ("4: pixelate factor above 1", ["+outliers.options.pixelate.factor=2.0"]),
    "jigsaw_grid": ("4: jigsaw grid of 1", ["+outliers.options.jigsaw.grid=1"]),
}


def sh(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def prepare(root: Path) -> None:
    runs = root / "runs"
    runs.mkdir(exist_ok=True)
    (runs / "empty").mkdir(exist_ok=True)
    torch.save({"x_in": torch.zeros(100, 1, 28, 28), "y_in": torch.zeros(100, dtype=torch.long)}, runs / "cut.pt")
    (runs / "cut.pt").write_bytes((runs / "cut.pt").read_bytes()[:20000])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    args = ap.parse_args()
    project = Path.cwd()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    rev = sh(["git", "rev-parse", "--short", args.rev], project, env).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="trustdd-tte-") as tmp:
        root = Path(tmp) / "project"
        for cmd in (["git", "clone", "-q", str(project), str(root)], ["git", "checkout", "-q", rev]):
            subprocess.run(cmd, cwd=root if cmd[1] == "checkout" else project, env=env, check=True)
        for cmd in (
            ["git", "config", "user.email", "bench@trustdd"],
            ["git", "config", "user.name", "bench"],
            ["dvc", "config", "--local", "cache.dir", str(project / ".dvc" / "cache")],
            ["dvc", "config", "--local", "core.analytics", "false"],
        ):
            subprocess.run(cmd, cwd=root, env=env, check=True)
        env["PYTHONPATH"] = str(root)  # the stages import the clone's trustdd, not the installed one
        subprocess.run(["dvc", "checkout", "-q"], cwd=root, env=env)
        prepare(root)
        for name in args.cases:
            what, overrides = CASES[name]
            start = time.perf_counter()
            proc = sh(["dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)]], root, env)
            seconds = round(time.perf_counter() - start, 1)
            out = proc.stdout + proc.stderr
            ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
            errors = [line for line in out.splitlines() if line.lower().startswith("error:") or "Error" in line]
            row = {"rev": rev, "case": name, "what": what, "overrides": overrides, "exit_code": proc.returncode,
                   "seconds": seconds, "stages_run": ran, "error": errors[0][:300] if errors else None,
                   "cpus": os.cpu_count()}
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            # back to the committed state for the next case
            sh(["git", "checkout", "-q", "--", "params.yaml", "dvc.lock"], root, env)
            sh(["git", "checkout", "-q", "--", "metrics"], root, env)
            sh(["dvc", "checkout", "-q", "-f"], root, env)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
