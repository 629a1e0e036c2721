"""What the distillation itself buys: distil with params.yaml (plus overrides), then train fresh nets on the
distilled set and on the set it started from, paired by net seed, and print the gains as one JSON line.

    python benchmarks/distill_gain.py -S distill.mtt.lr_lr=0.01 -S distill.mtt.syn_steps=20 --nets 5

Reads the pipeline's prepared data, outlier pool and experts (run `dvc repro train_experts` first) and
writes nothing but --out. This is the tuning loop of the default (docs/tuning.md): the same code as
the distill and evaluate stages, with fewer scores and no baselines but `init`, so one config costs a
distillation plus 2 x --nets evaluation nets. Each override is `dotted.key=YAML value`, as `dvc exp run -S`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from trustdd.data.ood import OODSets
from trustdd.data.prepared import Prepared
from trustdd.distill.methods import DistillTask
from trustdd.evaluation import report
from trustdd.evaluation.protocol import evaluate
from trustdd.evaluation.training_sets import TrainingSet
from trustdd.experiments.presets import merge
from trustdd.params import params_from_dict
from trustdd.runtime import configure_determinism, resolve_device


def override(raw: dict, assignments: list[str]) -> dict:
    for item in assignments:
        key, _, value = item.partition("=")
        nested: dict = {}
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
        raw = merge(raw, nested)
    return raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-S", "--set", action="append", default=[], help="dotted.key=value override of params.yaml")
    ap.add_argument("--nets", type=int, default=3, help="evaluation nets per set (paired by seed)")
    ap.add_argument("--scores", default="msp,energy", help="OOD scores to compute, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=0, help="evaluation nets in this many one-thread processes")
    ap.add_argument("--label", default="", help="a name for this config in the output")
    ap.add_argument("--out", type=Path, help="append the JSON line to this file too")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = params_from_dict(override(yaml.safe_load(Path("params.yaml").read_text()), args.set))
    configure_determinism(p.seed)
    device = resolve_device(p.device)
    t0 = time.time()
    result = p.method_config().run(DistillTask.from_files(p, device))
    distill_s = time.time() - t0

    prepared = Prepared.load()
    ood = OODSets.load()
    to_inputs = prepared.transform
    start = result.start
    sets = [
        TrainingSet("distilled", result.x_in, result.y_in, result.x_out, result.lr, "distilled", result.y_soft),
        TrainingSet("init", start.x_in, start.y_in, start.x_out, start.lr, "init", start.y_soft),
    ]
    cfg = dataclasses.replace(p.evaluate, num_eval=args.nets, scores=tuple(args.scores.split(",")), random_baseline=False)
    t1 = time.time()
    ev = evaluate(
        sets, to_inputs(prepared.test_x), prepared.test_y, {n: to_inputs(x) for n, x in ood.images.items()},
        ood.groups, p.net_spec(), cfg, p.lambda_oe, p.seed, device, tuple(1.0 / s for s in to_inputs.std),
        args.workers,
    )
    head = report.headline(ev)
    curve = [r["loss"] for r in result.history]
    line = {
        "label": args.label,
        "overrides": args.set,
        "nets": args.nets,
        "per_net": {k: {m: [round(r[m] if m == "accuracy" else r["msp"]["fpr95_in"], 4) for r in ev.per_net[k][p.network.name]]
                        for m in ("accuracy", "msp_fpr95_in")} for k in ("distilled", "init")},
        "distilled": {"accuracy": head["distilled"][p.network.name]["accuracy"], "lr": round(result.lr, 5)},
        "init": {"accuracy": head["init"][p.network.name]["accuracy"], "lr": start.lr},
        "gain": head["distilled_minus_init"][p.network.name],
        "fpr95_in": {s: {k: head[k][p.network.name][s]["fpr95_in"] for k in ("distilled", "init")} for s in cfg.scores},
        "moved_in": round(float((result.x_in - start.x_in).abs().mean()), 4),  # mean |pixel change|, input units
        "moved_out": round(float((result.x_out - start.x_out).abs().mean()), 4) if start.x_out.numel() else None,
        "loss_first_window": round(curve[0], 4) if curve else None,
        "loss_last_window": round(curve[-1], 4) if curve else None,
        "loss_ratio": round(curve[-1] / curve[0], 4) if curve else None,
        "distill_seconds": round(distill_s, 1),
        "evaluate_seconds": round(time.time() - t1, 1),
    }
    text = json.dumps(line)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
