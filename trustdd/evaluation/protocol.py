"""Train fresh networks on a set of images and measure everything users publish about them.

For every training set (the distilled set, and the baselines: the set the distillation started from,
a random real subset of the same size, optionally the whole train set), every architecture in
``evaluate.architectures`` and every one of ``num_eval`` nets: train for a fixed number of epochs (no checkpoint is chosen on the test set), then
measure InD accuracy, calibration (ECE), misclassification AUROC and, for every OOD score, the OOD
metrics of every OOD set. Results are the mean and std over the nets.

Net ``i`` of every training set and architecture draws from the same random stream (initial weights,
batch order, augmentation), so the distilled-vs-init and distilled-vs-random gains are paired comparisons.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from trustdd.distill.distilled import DistilledFile
from trustdd.distributed import SINGLE, Group
from trustdd.evaluation.metrics import (
    METRIC_NAMES,
    expected_calibration_error,
    mean_std,
    misclassification_auroc,
    ood_metrics,
    roc_points,
    summarize_ood,
)
from trustdd.evaluation.scores import SCORES, Probe, Score
from trustdd.evaluation.training_sets import TrainingSet
from trustdd.nn.augment import DSA
from trustdd.nn.networks import NETWORKS, NetSpec, init_network
from trustdd.nn.training import TrainConfig, seed_from, train_network
from trustdd.options import at_least, check_each, invalid, make
from trustdd.runtime import generator
from trustdd.workers import run_jobs

HIST_BINS = 40
IND_LABEL = "InD test"  # the name the InD test set has in plot data


@dataclass(frozen=True)
class EvalConfig:
    set: str = str(DistilledFile.PATH)  # the set to evaluate: distilled.pt, or MTT-style images/labels .pt
    num_eval: int = 3
    epochs: int = 300
    lr: float | str = "learned"  # a number, or "learned": the lr the set comes with (MTT learns one)
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    architectures: tuple[str, ...] = ("convnet",)  # network.name keys; convnet uses the `network` params
    scores: tuple[str, ...] = ("msp", "max_logit", "energy", "odin", "knn")
    score_options: dict = field(default_factory=dict)  # {score: {option: value}}, e.g. {odin: {temperature: 1000}}
    init_baseline: bool = True  # also train on the set the distillation started from (when the set has one)
    random_baseline: bool = True  # also train on a random real subset of the same size
    baseline_lr: float = 0.01  # lr for the baselines (real images have no learned lr): the DD protocol's
    full_data_epochs: int = 0  # > 0: also train on the whole InD train set for this many epochs (the ceiling)

    def check(self) -> None:
        """The section's own rules, before any data is read; raises ParamsError naming ``evaluate.<key>``, the
        value and what is valid. Each score's options are checked here without context, and again by the
        params check against the size of the set to evaluate (knn's k)."""
        for key in ("num_eval", "epochs", "batch_size"):
            at_least(f"evaluate.{key}", getattr(self, key), 1)
        if isinstance(self.lr, str) and self.lr != "learned":
            raise invalid("evaluate.lr", self.lr, "a number or 'learned'")
        if not self.architectures:
            raise invalid("evaluate.architectures", [], f"at least one of {', '.join(NETWORKS.names())}")
        for name in self.architectures:
            if name not in NETWORKS:
                raise invalid("evaluate.architectures", name, f"one of {', '.join(NETWORKS.names())}")
        for name in self.scores:
            SCORES.get(name)
        if not self.scores:
            raise invalid("evaluate.scores", [], f"at least one of {', '.join(SCORES.names())}")
        check_each(SCORES, self.score_options, "evaluate.score_options", "score")
        if not self.set:
            raise invalid("evaluate.set", self.set, "the distilled set to evaluate (default data/distilled/distilled.pt)")
        at_least("evaluate.full_data_epochs", self.full_data_epochs, 0)
        if not self.baseline_lr > 0:
            raise invalid("evaluate.baseline_lr", self.baseline_lr, "a number > 0")

    def lr_for(self, s: TrainingSet, arch: str, home: str) -> float:
        """The lr for training ``arch`` on ``s``. A learned lr belongs to the net the set was distilled with
        (``home``, the ``network`` params): other architectures get ``baseline_lr``, as the baselines do.
        Measured: MTT's learned 0.067 trains VGG-11 to chance on the default set; 0.01 gives 80%."""
        if s.name not in ("distilled", "init"):  # the init set trains at the distillation's starting lr
            return self.baseline_lr
        if self.lr != "learned":
            return float(self.lr)
        if arch != home:
            return self.baseline_lr
        if s.lr is None:
            raise ValueError(
                f"evaluate.lr: 'learned', but {s.origin} carries no learned lr; set evaluate.lr to a number "
                "(MTT logs its Synthetic_LR to wandb; the DD protocol uses 0.01)"
            )
        return float(s.lr)

    def build_scores(self) -> dict[str, Score]:
        return {name: make(SCORES, name, self.score_options.get(name)) for name in self.scores}


@dataclass
class Evaluation:
    """What :func:`evaluate` measured."""

    results: dict  # {set: {arch: {accuracy, ece, misclassification_auroc: {mean, std}, ood: {score: ...}}}}
    curves: list[dict]  # one row per (set, arch, net, epoch)
    roc: list[dict]  # ROC points of net 0 of the first set and architecture: {score, ood_set, fpr, tpr}
    histograms: list[dict]  # its score histograms: {score, images, value, fraction}
    nets: dict = field(default_factory=dict)  # {set: {arch: {"epochs", "lr"}}}
    per_net: dict = field(default_factory=dict)  # {set: {arch: [net i: {accuracy, score: {metric: all-sets mean}}]}}


def check(sets: list[TrainingSet], cfg: EvalConfig, home: str) -> dict[str, Score]:
    """Every problem the options can have, raised before any net is trained."""
    scores = cfg.build_scores()
    for s in sets:
        for arch in cfg.architectures:
            cfg.lr_for(s, arch, home)
        for score in scores.values():
            score.check(num_train=int(s.x_in.shape[0]))
    return scores


@dataclass(frozen=True)
class _Shared:
    """What every evaluation net needs besides its training set: sent once to each worker process."""

    test_x: torch.Tensor
    test_y: torch.Tensor
    ood: dict[str, torch.Tensor]
    cfg: EvalConfig
    lambda_oe: float
    seed: int
    device: torch.device
    pixel_scale: tuple[float, ...]


@dataclass(frozen=True)
class _Job:
    set: TrainingSet
    spec: NetSpec  # the architecture's spec
    train: TrainConfig
    net: int  # index i: net i of every set and architecture shares its seed stream
    plots: bool  # keep ROC points and histograms (net 0 of the first set and architecture)


@dataclass
class _NetResult:
    record: dict
    history: list[dict]
    plots: Evaluation | None


def _run_job(job: _Job, shared: _Shared) -> _NetResult:
    """Train net ``job.net`` on ``job.set`` and score it: the same result in any process."""
    s, dev = job.set, shared.device
    g = generator(shared.seed, "evaluate", job.net)  # shared by every set and architecture: paired comparisons
    net = init_network(job.spec, seed_from(g), dev)
    history = train_network(net, s.x_in.to(dev), s.targets.to(dev), s.x_out.to(dev), job.train, g, DSA())
    plots = Evaluation({}, [], [], []) if job.plots else None
    scores = shared.cfg.build_scores()
    record = _score_net(net, s, shared.test_x, shared.test_y, shared.ood, scores, shared.pixel_scale, plots)
    return _NetResult(record, history, plots)


def evaluate(
    sets: list[TrainingSet],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ood: dict[str, torch.Tensor],
    groups: dict[str, str],
    spec: NetSpec,
    cfg: EvalConfig,
    lambda_oe: float,
    seed: int,
    device: torch.device,
    pixel_scale: tuple[float, ...],
    workers: int = 0,
    group: Group = SINGLE,
) -> Evaluation | None:
    """Train and score. All images are network inputs (float, already through the set's transform).
    Every option is checked before the first net is trained. With ``workers`` > 0 the nets are trained
    in that many one-thread processes (the same bytes for any number of them, see trustdd.workers).
    In a group of several processes, job j (a net of one set and architecture) runs on rank
    ``j mod world`` and the results are gathered on rank 0, which returns the Evaluation (the others
    return None)."""
    check(sets, cfg, spec.name)
    out = Evaluation({}, [], [], [])
    plot_for = (sets[0].name, cfg.architectures[0])
    groups_of_jobs = []
    for s in sets:
        for arch in cfg.architectures:
            train_cfg = TrainConfig(
                epochs=cfg.full_data_epochs if s.name == "full" else cfg.epochs,
                lr=cfg.lr_for(s, arch, spec.name),
                batch_size=cfg.batch_size,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                lambda_oe=lambda_oe,
                outlier_ratio=(s.x_out.shape[0] / s.x_in.shape[0]) if s.x_out.shape[0] else 0.0,
            )
            arch_spec = dataclasses.replace(spec, name=arch)
            jobs = [_Job(s, arch_spec, train_cfg, i, (s.name, arch) == plot_for and i == 0) for i in range(cfg.num_eval)]
            groups_of_jobs.append((s, arch, train_cfg, jobs))
    shared = _Shared(test_x, test_y, ood, cfg, lambda_oe, seed, device, pixel_scale)
    all_jobs = [job for *_, jobs in groups_of_jobs for job in jobs]
    desc = "evaluate (nets)" if group.world == 1 else f"evaluate (nets, rank {group.rank})"
    results = group.gather_shards(run_jobs(_run_job, group.shard(all_jobs), shared, workers, desc=desc))
    if results is None:
        return None
    done = iter(results)
    for s, arch, train_cfg, jobs in groups_of_jobs:
        per_net: list[dict] = []
        for job in jobs:
            r = next(done)
            out.curves += [{"set": s.name, "arch": arch, "net": job.net, **h} for h in r.history]
            if r.plots is not None:
                out.roc += r.plots.roc
                out.histograms += r.plots.histograms
            per_net.append(r.record)
        out.results.setdefault(s.name, {})[arch] = _summarize(per_net, groups)
        out.per_net.setdefault(s.name, {})[arch] = [_all_sets(r) for r in per_net]
        out.nets.setdefault(s.name, {})[arch] = {"epochs": train_cfg.epochs, "lr": train_cfg.lr, "images": int(s.x_in.shape[0])}
    return out


def _score_net(
    net: torch.nn.Module,
    s: TrainingSet,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ood: dict[str, torch.Tensor],
    scores: dict[str, Score],
    pixel_scale: tuple[float, ...],
    plots: Evaluation | None,
) -> dict:
    """One trained net: classification numbers and, per score, the OOD metrics of every set."""
    test = Probe(net, test_x, pixel_scale)
    probes = {name: Probe(net, x, pixel_scale) for name, x in ood.items()}
    train = Probe(net, s.x_in, pixel_scale)
    logits = test.logits
    record = {
        "accuracy": 100.0 * float((logits.argmax(1) == test_y).float().mean()),
        "ece": expected_calibration_error(logits, test_y),
        "misclassification_auroc": misclassification_auroc(logits, test_y),
        "ood": {},
    }
    for name, score in scores.items():
        score.fit(net, train, s.y_in)
        s_in = score(test)
        s_out = {set_name: score(p) for set_name, p in probes.items()}
        record["ood"][name] = {set_name: ood_metrics(s_in, v) for set_name, v in s_out.items()}
        if plots is not None:
            for set_name, v in s_out.items():
                plots.roc += [{"score": name, "ood_set": set_name, **p} for p in roc_points(s_in, v)]
            plots.histograms += _histogram(name, {IND_LABEL: s_in, **s_out})
    return record


def _summarize(per_net: list[dict], groups: dict[str, str]) -> dict:
    out = {k: mean_std([r[k] for r in per_net]) for k in ("accuracy", "ece", "misclassification_auroc")}
    out["ood"] = {name: summarize_ood([r["ood"][name] for r in per_net], groups) for name in per_net[0]["ood"]}
    return out


def _all_sets(record: dict) -> dict:
    """One net's accuracy and, per score, each metric averaged over every OOD set (for paired gains)."""
    out = {"accuracy": record["accuracy"]}
    for score, by_set in record["ood"].items():
        out[score] = {m: float(np.mean([v[m] for v in by_set.values()])) for m in METRIC_NAMES}
    return out


def _histogram(score: str, values: dict[str, torch.Tensor]) -> list[dict]:
    """Share of each image set per score bin. The range is the 0.5-99.5% quantiles of all scores pooled
    (values outside are counted in the end bins), so one extreme image cannot squash the plot."""
    pooled = torch.cat(list(values.values())).double().numpy()
    lo, hi = np.quantile(pooled, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    rows = []
    for images, v in values.items():
        counts, _ = np.histogram(np.clip(v.double().numpy(), lo, hi), bins=edges)
        share = counts / max(1, counts.sum())
        rows += [
            {"score": score, "images": images, "value": round(float(c), 5), "fraction": round(float(f), 5)}
            for c, f in zip(centres, share)
        ]
    return rows
