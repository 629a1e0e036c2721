"""What every distillation method shares: the protocol (:class:`Method`) and registry, its input
(:class:`DistillTask`), the loss log, and the real-image initialisation of S_in and S_out. Its output,
:class:`~trustdd.distill.distilled.DistilledSet`, is in :mod:`trustdd.distill.distilled`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trustdd.data.images import stratified_subset
from trustdd.data.prepared import Prepared
from trustdd.distill.distilled import DistilledSet
from trustdd.distributed import SINGLE, Group
from trustdd.experts import ExpertBuffer
from trustdd.nn.networks import NetSpec, unflatten_params
from trustdd.options import ParamsError, Plugin
from trustdd.outliers.pool import OutlierPool
from trustdd.registry import Registry

METHODS: Registry[type] = Registry("method")


class Method(Plugin):
    """A distillation method: a frozen dataclass whose fields are its options (``distill.<name>``),
    registered in :data:`METHODS`. ``run`` turns a :class:`DistillTask` into a :class:`DistilledSet`;
    ``needs_experts`` says whether the train_experts stage must train expert trajectories for it, and
    ``parallel`` whether it divides its work over the processes of ``task.group`` (else the distill
    stage runs it on one process)."""

    options_key = "distill.{name}"
    needs_experts = False
    parallel = False

    def check(self, ipc: int | None = None, experts_epochs: int | None = None, norm: str | None = None, **context) -> None:
        """Raise ValueError naming ``distill.<name>.<option>``, its value and what is valid; the context,
        when known: the ipc, the experts' epochs (``experts.epochs``) and the network's normalisation."""

    def run(self, task: DistillTask) -> DistilledSet:
        raise NotImplementedError

    def smoke(self) -> dict:
        """What a smoke run of a preset changes in this method's options (dotted params keys, with any
        other section this method constrains): its shapes kept, its budget tiny
        (:mod:`trustdd.experiments.smoke`)."""
        return {}

    def work(self, ipc: int) -> float:
        """A number proportional to this method's compute at a fixed set size and network, by which a
        smoke run's distill time is scaled to the full run's."""
        return 1.0

# How synthetic outlier blocks relate to the outlier kinds (corruption types) of the pool.
#   blockwise: block c (the ipc outliers next to class c) starts from, and is matched against, pool
#              images of kind c mod K only, as in the TrustDD paper;
#   uniform:   every block draws from the whole pool, so every batch mixes all kinds.
MIXINGS = ("blockwise", "uniform")


def check_mixing(mixing: str) -> None:
    """The rule of ``outliers.mixing`` (the params check and :meth:`DistillTask.block_members` apply it)."""
    if mixing not in MIXINGS:
        raise ValueError(f"outliers.mixing: unknown value {mixing!r}; valid choices: {', '.join(MIXINGS)}")


@dataclass
class DistillTask:
    """Inputs common to every method. Images are float tensors in the networks' input space."""

    real_x: torch.Tensor
    real_y: torch.Tensor
    pool_x: torch.Tensor  # may hold 0 images: plain DD without outliers
    pool_kind: torch.Tensor
    num_kinds: int
    num_classes: int
    ipc: int
    spec: NetSpec
    lambda_oe: float
    seed: int
    device: torch.device
    experts: ExpertBuffer | None = None
    mixing: str = "blockwise"
    group: Group = SINGLE  # the processes the method runs on (methods with ``parallel`` True use them)
    kinds: tuple[str, ...] = ()  # the pool's outlier kinds by index (corruption names, or "oe")

    @classmethod
    def from_files(
        cls, p, device: torch.device, prepared: Prepared | None = None, root: Path = Path("."), group: Group = SINGLE
    ) -> DistillTask:
        """The task the distill stage runs for params ``p``: the prepared InD data (read unless given), the
        outlier pool and (for methods that need them) the expert trajectories, from the pipeline's outputs."""

        prepared = prepared or Prepared.load(root / Prepared.PATH)
        counts = torch.bincount(prepared.train_y, minlength=len(prepared.classes))
        fewest = int(counts.argmin())
        if int(counts[fewest]) < p.ipc:  # a user's own data: its class sizes are known once it is prepared
            raise ParamsError(
                f"params: ipc: invalid value {p.ipc}; expected at most {int(counts[fewest])}, the train images of "
                f"class {prepared.classes[fewest]!r} (the smallest class of data/prepared/ind.pt)"
            )
        pool = OutlierPool.load(root / OutlierPool.PATH)
        return cls(
            real_x=prepared.norm(prepared.train_x),
            real_y=prepared.train_y,
            pool_x=prepared.norm(pool.x),
            pool_kind=pool.kind,
            num_kinds=max(1, len(pool.kinds)),
            num_classes=len(prepared.classes),
            ipc=p.ipc,
            spec=p.net_spec(),
            lambda_oe=p.lambda_oe,
            seed=p.seed,
            device=device,
            experts=ExpertBuffer(root / "data/experts") if p.method_config().needs_experts else None,
            mixing=p.outliers.mixing,
            group=group,
            kinds=tuple(pool.kinds),
        )

    @property
    def has_outliers(self) -> bool:
        return self.pool_x.shape[0] > 0 and self.lambda_oe > 0

    def block_label(self, block: int) -> str:
        """What outlier block ``block`` is drawn from: its kind (blockwise), or every kind (uniform)."""
        if self.mixing == "uniform":
            return "all kinds"
        return self.kinds[block % self.num_kinds] if self.kinds else f"kind {block % self.num_kinds}"

    def block_members(self, block: int) -> torch.Tensor:
        """Indices of the pool images that outlier block ``block`` starts from and is matched against."""
        check_mixing(self.mixing)
        if self.mixing == "uniform":
            return torch.arange(self.pool_x.shape[0])
        kind = block % self.num_kinds
        members = torch.nonzero(self.pool_kind == kind).flatten()
        if members.numel() < self.ipc:
            raise ValueError(f"outlier kind {kind} has {members.numel()} images, fewer than ipc={self.ipc}")
        return members


class DivergenceError(FloatingPointError):
    """A distillation left the range where its result means anything (a learned lr at or below zero, a
    matching loss that is not finite or stays far above its start): the stage stops and writes nothing."""


class DivergenceGuard:
    """Stops trajectory matching that diverged, naming the iteration and the keys to change.

    The matching loss is normalised: 0 when the student lands on the expert's target, 1 when it does not move
    from its start. A loss of ``FACTOR`` (10) means the student ends sqrt(10), about 3.2, times farther from the
    target than where it began; a healthy run starts near or below 1 (the default's first window: 0.82) and
    falls. So the guard stops a run whose loss stays above ``FACTOR`` times its first value (and at least
    ``FACTOR``) for ``PATIENCE`` (10) iterations in a row: one large draw of expert and start epoch does not
    stop it, a student overshooting iteration after iteration does. The student's learned lr must stay a
    finite number above zero: at zero it does not move, below it walks away from the target (and evaluation
    could not train at it)."""

    FACTOR, PATIENCE = 10.0, 10

    def __init__(self, key: str, iterations: int) -> None:
        self.key, self.iterations = key, iterations
        self.first: float | None = None
        self.above = 0

    def check(self, iteration: int, loss: float, lr: float) -> None:
        """After iteration ``iteration`` (0-based): its matching loss, and the learned lr after its step."""
        at = f"{self.key}: diverged at iteration {iteration + 1} of {self.iterations}"
        keys = f"lower {self.key}.lr_img or {self.key}.lr_lr, or change {self.key}.lr_init; no output was written"
        if not math.isfinite(loss):
            raise DivergenceError(f"{at}: the matching loss became {loss} (learned lr {lr:.4g}); {keys}")
        if not (math.isfinite(lr) and lr > 0):
            raise DivergenceError(f"{at}: the learned lr fell to {lr:.4g} (it must stay > 0; it started at "
                                  f"{self.key}.lr_init); {keys}")
        if self.first is None:
            self.first = loss
        bound = self.FACTOR * max(1.0, self.first)
        self.above = self.above + 1 if loss > bound else 0
        if self.above >= self.PATIENCE:
            raise DivergenceError(f"{at}: the matching loss stayed above {bound:.4g} ({self.FACTOR:g} x its start, "
                                  f"{self.first:.4g}; 1 = a student that does not move) for {self.PATIENCE} iterations, "
                                  f"reaching {loss:.4g} (learned lr {lr:.4g}); {keys}")


class LossLog:
    """Matching-loss curve by window: every ``every`` iterations (and at the last one) one record with the
    MEAN of each logged quantity over the window's iterations, not one sample of it, so the curve shows the
    trend rather than the draw of expert and start epoch. Wall time is kept apart (``seconds``): it differs
    run to run, while the records are a pure function of the seed."""

    def __init__(self, every: int, total: int) -> None:
        self.every, self.total = every, total
        self.records: list[dict] = []
        self.seconds: list[float] = []
        self._sums: dict[str, float] = {}
        self._count = 0
        self._start = time.time()

    def add(self, iteration: int, values: dict[str, float], **current: float) -> dict | None:
        """Add one iteration's values; returns the window's record when ``iteration`` closes a window.
        ``current`` holds values reported as they stand at the window's end (e.g. the learned lr)."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        if (iteration + 1) % self.every and iteration != self.total - 1:
            return None
        record = {"iteration": iteration + 1, "iterations": self._count}
        record.update({k: v / self._count for k, v in self._sums.items()})
        record.update({k: float(v) for k, v in current.items()})
        self.records.append(record)
        self.seconds.append(round(time.time() - self._start, 3))
        self._sums, self._count = {}, 0
        return record


INITS = ("random", "kmeans")


def kmeans_medoids(features: torch.Tensor, labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Per class, the real image nearest to each of ``per_class`` k-means centroids of its features
    (a coreset that covers each class's modes; distinct images, in class order)."""
    from sklearn.cluster import KMeans

    feats = features.double().numpy()
    picks = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        if members.numel() < per_class:
            raise ValueError(f"class {c} has {members.numel()} images, fewer than ipc={per_class}")
        km = KMeans(n_clusters=per_class, n_init=3, random_state=seed).fit(feats[members.numpy()])
        dist = torch.cdist(torch.from_numpy(km.cluster_centers_), torch.from_numpy(feats[members.numpy()]))
        chosen: list[int] = []
        for row in dist:
            chosen.append(next(i for i in row.argsort().tolist() if i not in chosen))
        picks.append(members[torch.tensor(chosen)])
    return torch.cat(picks)


@torch.no_grad()
def embed(spec: NetSpec, flat: torch.Tensor, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """L2-normalised penultimate features of ``x`` under network ``spec`` with parameters ``flat``."""
    net = spec.build()
    net.load_state_dict(unflatten_params(net, flat), strict=False)
    net.eval()
    return torch.cat([F.normalize(net.embed(x[i : i + batch_size]), dim=1) for i in range(0, x.shape[0], batch_size)])


def initial_sets(
    task: DistillTask, g: torch.Generator, init: str = "random"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real initialisation. S_in: ``ipc`` train images per class, at random or (``kmeans``) the medoids
    of per-class k-means on the first expert's final features. S_out: ``ipc`` pool images per class
    block, drawn from :meth:`DistillTask.block_members` (blockwise by kind, or the whole pool).
    ``init`` is one of :data:`INITS`: a method checks its ``init`` option (``distill.mtt.init``) before it runs."""
    if init == "kmeans":
        if task.experts is None:
            raise ValueError("distill.mtt.init: 'kmeans' needs expert trajectories for its features")
        features = embed(task.spec, task.experts.trajectory(0)[-1], task.real_x.cpu())
        pick = kmeans_medoids(features, task.real_y.cpu(), task.ipc, task.seed)
    elif init == "random":
        pick = stratified_subset(task.real_y, task.ipc, g)
    else:  # a caller's bug, not a params value: the methods check their init option first
        raise ValueError(f"initial_sets: unknown init {init!r}; valid: {', '.join(INITS)}")
    x_in, y_in = task.real_x[pick].clone(), task.real_y[pick].clone()
    if task.pool_x.shape[0] == 0:
        return x_in, y_in, task.pool_x[:0].clone()
    blocks = []
    for c in range(task.num_classes):
        members = task.block_members(c)
        blocks.append(members[torch.randperm(members.numel(), generator=g)[: task.ipc]])
    return x_in, y_in, task.pool_x[torch.cat(blocks)].clone()
