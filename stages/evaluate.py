"""Stage 5: train fresh nets on the distilled set; InD accuracy and OOD detection metrics."""

from pathlib import Path

from trustdd import artifacts
from trustdd.cli import run_stage
from trustdd.data import InputTransform, Prepared
from trustdd.evaluation import evaluate
from trustdd.params import load_params
from trustdd.runtime import configure_determinism, resolve_device, write_json

METRICS = Path("metrics/metrics.json")
CURVES = Path("metrics/eval_curves.json")


def main() -> None:
    p = load_params()
    configure_determinism(p.seed)
    device = resolve_device(p.device)
    prepared = Prepared.from_dict(artifacts.load("data/prepared/ind.pt"))
    ood = artifacts.load("data/prepared/ood.pt")
    distilled = artifacts.load("data/distilled/distilled.pt")
    to_inputs = InputTransform.from_dict(distilled)  # test and OOD images go through the set's own transform
    metrics, curves = evaluate(
        distilled["x_in"],
        distilled["y_in"],
        distilled["x_out"],
        distilled["lr"],
        to_inputs(prepared.test_x),
        prepared.test_y,
        {name: to_inputs(x) for name, x in ood.items()},
        p.net_spec(),
        p.evaluate,
        p.lambda_oe,
        p.seed,
        device,
    )
    write_json(METRICS, metrics)
    write_json(CURVES, {"train": [{k: r[k] for k in ("net", "epoch", "loss", "train_acc")} for r in curves]})
    acc = metrics["accuracy"]
    msp = metrics["ood"]["msp"]["mean"]
    print(f"accuracy {acc['mean']:.2f} +- {acc['std']:.2f}; MSP mean AUROC {msp['auroc']:.2f}, FPR95 {msp['fpr95']:.2f}")


if __name__ == "__main__":
    run_stage(main)
