"""parallel.nproc 1 vs N on this machine: the expert stage's wall time and distillation's speed.

    python benchmarks/parallel.py                          # from the project root, after `dvc repro`
    python benchmarks/parallel.py --nproc 1 2 --iterations 20 --out benchmarks/results/parallel_cpu.jsonl

Each configuration runs the real stage (``python -m stages.train_experts``, ``stages.distill``) in a
scratch copy of the project that holds the workspace's prepared data, outlier pool and experts, with
the workspace's params.yaml changed only as listed. Every process runs the given number of threads
(OMP_NUM_THREADS; torchrun's ranks inherit it). Reported per configuration:

- ``train_experts``: the stage's wall time, launch included (``seconds``);
- ``distill`` (``method: mtt``): seconds per iteration and trajectories per second, from the stage's
  own timing file (``metrics/timing/distill.json``; the first window is left out, it holds the
  start-up). ``distill.mtt.trajectories: N`` matches N trajectories per iteration, on one process or
  divided over N, so the two are compared at equal work;
- ``experts_md5``: one md5 over all expert files, to compare the bytes across configurations;
- ``peak_rss_mb``: the largest resident set of any one process the stage started (a rank, a worker, or
  the launcher itself), ``ru_maxrss`` of the children.

One JSON line per configuration goes to ``--out`` (appended) and to stdout, with the machine and commit.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import apply_overrides  # noqa: E402

from trustdd.runtime import resolve_device  # noqa: E402

INPUTS = ["data/prepared", "data/outliers", "data/experts", "data/params_ok.txt"]


def configurations(nprocs: list[int], threads: int) -> list[dict]:
    """(stage, params changes, OMP threads) to measure. Experts: one process on all threads and on one,
    N one-thread ranks, and the default's one-thread workers. Distill: per N, the same N trajectories per
    iteration on one process (all threads, one thread) and on N one-thread ranks."""
    out = [{"stage": "train_experts", "changes": {"workers": 0}, "threads": threads}]
    out += [{"stage": "train_experts", "changes": {"workers": 0, "parallel__nproc": n}, "threads": 1} for n in nprocs]
    out.append({"stage": "train_experts", "changes": {"workers": threads}, "threads": threads})  # the default's way
    for n in nprocs:
        per_iteration = {"distill__mtt__trajectories": n}
        out.append({"stage": "distill", "changes": per_iteration, "threads": threads})
        out.append({"stage": "distill", "changes": per_iteration, "threads": 1})
        if n > 1:
            out.append({"stage": "distill", "changes": {**per_iteration, "parallel__nproc": n}, "threads": 1})
    return out


def one(args: argparse.Namespace) -> None:
    """Run one configuration (in this fresh process, so ``ru_maxrss`` of the children is its own)."""
    cfg = json.loads(args.one)
    root = Path(cfg["root"])
    params = apply_overrides(copy.deepcopy(yaml.safe_load((root / "params.base.yaml").read_text())), **cfg["changes"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), PYTHONPATH=str(root))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"stages.{cfg['stage']}"], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{cfg['stage']} with {cfg['changes']} failed:\n{proc.stderr[-3000:]}")
    record = {"seconds": round(time.perf_counter() - start, 1)}
    if cfg["stage"] == "distill":
        windows = json.loads((root / "metrics/timing/distill.json").read_text())["distill"]
        (a, b) = windows[0], windows[-1]
        per_it = (b["seconds"] - a["seconds"]) / (b["iteration"] - a["iteration"])
        per_iteration = cfg["changes"].get("distill__mtt__trajectories", 1)
        record.update(seconds_per_iteration=round(per_it, 3), trajectories_per_iteration=per_iteration,
                      trajectories_per_second=round(per_iteration / per_it, 3))
    if cfg["stage"] == "train_experts":  # one md5 over every expert file: are the bytes the same for every N?
        digest = hashlib.md5()
        for path in sorted((root / "data/experts").glob("expert_*.pt")):
            digest.update(path.read_bytes())
        record["experts_md5"] = digest.hexdigest()
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print(json.dumps(record))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iterations", type=int, default=20, help="distillation iterations per configuration (>= 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the one-process baseline")
    ap.add_argument("--stages", nargs="+", default=["train_experts", "distill"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/parallel_cpu.jsonl"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    if args.iterations < 8:
        ap.error(f"--iterations: invalid value {args.iterations}; expected >= 8 (4 timing windows, the first left out)")
    project = Path.cwd()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["method"] = "mtt"  # the trajectory-parallel method
    params["distill"]["mtt"].update(iterations=args.iterations, log_every=args.iterations // 4)
    device = resolve_device(params["device"])
    machine = {"cpus": os.cpu_count(), "device": str(device),
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "commit": commit}
    with tempfile.TemporaryDirectory(prefix="trustdd-parallel-") as tmp:
        root = Path(tmp)
        for name in ["stages", "trustdd"] + INPUTS:
            src = project / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
        (root / "params.base.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for cfg in configurations(args.nproc, args.threads):
            if cfg["stage"] not in args.stages:
                continue
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps({**cfg, "root": tmp})],
                                  check=True, capture_output=True, text=True)
            changes = {k.replace("__", "."): v for k, v in cfg["changes"].items()}
            line = {"stage": cfg["stage"], "params": changes, "omp_threads": cfg["threads"],
                    **json.loads(proc.stdout.splitlines()[-1]), **machine}
            if cfg["stage"] == "distill":
                line["iterations"] = args.iterations
            print(json.dumps(line), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
