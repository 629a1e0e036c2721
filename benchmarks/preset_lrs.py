"""Do a preset's lr_img / lr_lr / lr_init hold, or diverge? The distillation of a preset, at its shapes (full
width, syn_steps, batch_syn, ZCA), on small CIFAR-format files (tests/native_files.py) for N iterations,
(or the real ones, --data-root), with the preset's values and with any others given; prints, per run, the loss and learned lr at each
iteration and how it ended (ran through, or stopped by the divergence guard, trustdd.distill.base).

    python benchmarks/preset_lrs.py cifar10-ipc10 --iterations 50 \
        --try lr_img=100000,lr_lr=0.0001,lr_init=0.01      # the values the preset held before (MTT issue #31)

Experts: the smoke run's (2 experts, expert_epochs + 1 epochs, 10 images per class), so every start epoch
is 0 or 1: the steepest part of a trajectory. Each run appends one JSON line to --out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "tests")]

from dvc.utils.hydra import apply_overrides
from native_files import write_research_root

from trustdd.distill.base import DivergenceError
from trustdd.experiments import presets, smoke

STAGES = ["check_params", "prepare_data", "prepare_outliers", "train_experts"]


def one_run(name: str, iterations: int, values: dict[str, str], raw: Path) -> dict:
    preset = presets.load(name, PROJECT / "presets")
    base = yaml.safe_load((PROJECT / "params.yaml").read_text())
    base["data"]["root"] = str(raw)
    user = {"data.verify": "false", "workers": "0", "distill.mtt.iterations": str(iterations),
            **{f"distill.mtt.{k}": v for k, v in values.items()}}
    plan = smoke.plan(name, preset, base, user)
    mtt = plan.smoke.method_config()
    with tempfile.TemporaryDirectory(prefix="preset-lrs-") as tmp:
        shutil.copy(PROJECT / "params.yaml", Path(tmp) / "params.yaml")
        apply_overrides(Path(tmp) / "params.yaml", plan.overrides)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for stage in STAGES:
                importlib.import_module(f"stages.{stage}").main()
            start = time.perf_counter()
            outcome, curve = "ran through", []
            try:
                importlib.import_module("stages.distill").main()
                curve = json.loads(Path("metrics/distill_curve.json").read_text())["distill"]
            except DivergenceError as err:
                outcome = f"stopped: {err}"
            seconds = time.perf_counter() - start
        finally:
            os.chdir(cwd)
    return {
        "preset": name, "iterations": iterations, "lr_img": mtt.lr_img, "lr_lr": mtt.lr_lr, "lr_init": mtt.lr_init,
        "syn_steps": mtt.syn_steps, "width": plan.smoke.network.width, "outcome": outcome,
        "loss": [round(r["loss"], 4) for r in curve], "lr": [round(r["lr"], 6) for r in curve],
        "distill_seconds": round(seconds, 1), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--try", dest="tries", action="append", default=[],
                    help="other values, e.g. lr_img=1000,lr_lr=1e-4 (the preset's own run comes first)")
    ap.add_argument("--skip-preset", action="store_true", help="only the --try values")
    ap.add_argument("--data-root", type=Path, help="the real files (default: the tests' CIFAR-format noise files)")
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks/results/preset_lrs.jsonl")
    args = ap.parse_args()
    runs = ([] if args.skip_preset else [{}]) + [dict(kv.split("=", 1) for kv in t.split(",")) for t in args.tries]
    with tempfile.TemporaryDirectory(prefix="preset-lrs-raw-") as tmp:
        raw = args.data_root.resolve() if args.data_root else Path(tmp)
        if not args.data_root:
            write_research_root(raw, args.preset)
        for values in runs:
            result = one_run(args.preset, args.iterations, values, raw)
            result["data"] = str(raw) if args.data_root else "tests/native_files.py (noise)"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"{args.preset} lr_img {result['lr_img']:g} lr_lr {result['lr_lr']:g} lr_init {result['lr_init']:g}: "
                  f"{result['outcome']} ({len(result['loss'])} windows, {result['distill_seconds']} s); "
                  f"loss {result['loss'][:3]}...{result['loss'][-3:]}, lr {result['lr'][:2]}...{result['lr'][-2:]}",
                  flush=True)


if __name__ == "__main__":
    main()
