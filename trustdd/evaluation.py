"""Train fresh networks on a distilled set and measure InD accuracy and OOD detection.

No model selection on the test set: every net is trained for a fixed number of epochs and scored once,
at the end. Results are the mean and std over ``num_eval`` nets with different seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from trustdd.augment import DSA
from trustdd.metrics import METRIC_NAMES, mean_std, ood_metrics
from trustdd.networks import NetSpec, init_network
from trustdd.runtime import generator
from trustdd.scores import SCORES
from trustdd.training import TrainConfig, predict_logits, seed_from, train_network


@dataclass(frozen=True)
class EvalConfig:
    num_eval: int = 3
    epochs: int = 300
    lr: float | str = "learned"  # a number, or "learned": the student lr found by distillation
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scores: tuple[str, ...] = ("msp", "energy")

    def resolve_lr(self, learned: float | None) -> float:
        if self.lr == "learned":
            return float(learned) if learned is not None else 0.01
        return float(self.lr)


def evaluate(
    x_in: torch.Tensor,
    y_in: torch.Tensor,
    x_out: torch.Tensor,
    learned_lr: float | None,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ood: dict[str, torch.Tensor],
    spec: NetSpec,
    cfg: EvalConfig,
    lambda_oe: float,
    seed: int,
    device: torch.device,
) -> tuple[dict, list[dict]]:
    """Returns (metrics, training curves). Images are float tensors in normalised space."""
    scores = {name: SCORES.get(name)() for name in cfg.scores}
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.resolve_lr(learned_lr),
        batch_size=cfg.batch_size,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        lambda_oe=lambda_oe,
        outlier_ratio=(x_out.shape[0] / x_in.shape[0]) if x_out.shape[0] else 0.0,
    )
    accs: list[float] = []
    per_net: dict[str, dict[str, list[dict]]] = {s: {name: [] for name in ood} for s in scores}
    curves = []
    for i in tqdm(range(cfg.num_eval), desc="evaluate", unit="net"):
        g = generator(seed, "evaluate", i)
        net = init_network(spec, seed_from(g), device)
        history = train_network(net, x_in.to(device), y_in.to(device), x_out.to(device), train_cfg, g, DSA())
        curves += [{"net": i, **record} for record in history]
        logits_in = predict_logits(net, test_x)
        accs.append(100.0 * float((logits_in.argmax(1) == test_y).float().mean()))
        logits_ood = {name: predict_logits(net, x) for name, x in ood.items()}
        for s, score in scores.items():
            s_in = score(logits_in)
            for name, logits in logits_ood.items():
                per_net[s][name].append(ood_metrics(s_in, score(logits)))

    ood_mean: dict[str, dict] = {}
    ood_std: dict[str, dict] = {}
    for s in scores:
        ood_mean[s], ood_std[s] = {"mean": {}}, {"mean": {}}
        # per net, average over OOD sets first; then mean/std over nets
        set_avg = [
            {m: sum(per_net[s][name][i][m] for name in ood) / len(ood) for m in METRIC_NAMES}
            for i in range(cfg.num_eval)
        ]
        for m in METRIC_NAMES:
            agg = mean_std([r[m] for r in set_avg])
            ood_mean[s]["mean"][m], ood_std[s]["mean"][m] = agg["mean"], agg["std"]
        for name in ood:
            ood_mean[s][name], ood_std[s][name] = {}, {}
            for m in METRIC_NAMES:
                agg = mean_std([r[m] for r in per_net[s][name]])
                ood_mean[s][name][m], ood_std[s][name][m] = agg["mean"], agg["std"]
    metrics = {
        "accuracy": mean_std(accs),
        "ood": ood_mean,
        "ood_std": ood_std,
        "eval_lr": train_cfg.lr,
    }
    return _rounded(metrics), curves


def _rounded(obj, digits: int = 4):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    return obj
