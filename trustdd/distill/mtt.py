"""Dataset distillation methods, one registry; TrustDD on trajectory matching (MTT).

A method takes a :class:`DistillTask` and returns a :class:`DistilledSet`, whatever it does inside,
so evaluation never needs to know which method made a set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm import tqdm

from trustdd.augment import DSA, NoAugment
from trustdd.data import stratified_subset
from trustdd.experts import ExpertBuffer
from trustdd.losses import trustdd_loss
from trustdd.networks import NetSpec, unflatten_params
from trustdd.registry import Registry
from trustdd.runtime import generator
from trustdd.training import seed_from


@dataclass
class DistillTask:
    """Inputs common to every method. Images are float tensors in the networks' normalised space."""

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


@dataclass
class DistilledSet:
    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor
    lr: float
    method: str
    history: list[dict] = field(default_factory=list)  # one record per logged iteration


METHODS: Registry[type] = Registry("method")


def trajectory_matching_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||student - target||^2 / ||start - target||^2``: 0 when the student lands on the expert's
    later snapshot, 1 when it has not moved from the start (MTT's normalised parameter distance)."""
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()


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
    of per-class k-means on the first expert's final features. S_out: outlier block c (``ipc``
    images) is drawn from pool images of kind ``c mod num_kinds`` (the paper's blockwise assignment)."""
    if init == "random":
        pick = stratified_subset(task.real_y, task.ipc, g)
    elif init == "kmeans":
        if task.experts is None:
            raise ValueError("distill.init: 'kmeans' needs expert trajectories for its features")
        features = embed(task.spec, task.experts.trajectory(0)[-1], task.real_x.cpu())
        pick = kmeans_medoids(features, task.real_y.cpu(), task.ipc, task.seed)
    else:
        raise ValueError(f"distill.init: unknown value {init!r}; valid choices: {', '.join(INITS)}")
    x_in, y_in = task.real_x[pick].clone(), task.real_y[pick].clone()
    if task.pool_x.shape[0] == 0:
        return x_in, y_in, task.pool_x[:0].clone()
    blocks = []
    for c in range(task.num_classes):
        members = torch.nonzero(task.pool_kind == c % task.num_kinds).flatten()
        if members.numel() < task.ipc:
            raise ValueError(f"outlier kind {c % task.num_kinds} has {members.numel()} images, fewer than ipc={task.ipc}")
        blocks.append(members[torch.randperm(members.numel(), generator=g)[: task.ipc]])
    return x_in, y_in, task.pool_x[torch.cat(blocks)].clone()


@METHODS.register("mtt")
@dataclass(frozen=True)
class TrajectoryMatching:
    """TrustDD on MTT (Cazenavette et al. 2022).

    Each iteration: pick an expert and a start epoch t < max_start_epoch; from theta_t the student takes
    ``syn_steps`` SGD steps (learnable lr) on ``CE(S_in) + lambda_oe * OE(S_out)`` with DSA; the loss is
    ``||theta_student - theta_{t+M}||^2 / ||theta_t - theta_{t+M}||^2`` with M = expert_epochs.
    With no outliers this is plain MTT.
    """

    iterations: int = 200
    syn_steps: int = 10
    expert_epochs: int = 2
    max_start_epoch: int = 4
    lr_img: float = 100.0
    lr_lr: float = 1e-5
    lr_init: float = 0.01
    batch_syn: int = 0  # synthetic InD images per student step; 0 = all of S_in
    init: str = "random"  # S_in starts from real images: "random" per class, or "kmeans" medoids
    dsa: bool = True  # differentiable Siamese augmentation in the student steps
    log_every: int = 10

    needs_experts = True

    def check(self, expert_epochs_available: int) -> None:
        if self.init not in INITS:
            raise ValueError(f"distill.init: unknown value {self.init!r}; valid choices: {', '.join(INITS)}")
        # start epochs are drawn from [0, max_start_epoch); snapshots run from epoch 0 to experts.epochs
        if self.max_start_epoch < 1 or self.expert_epochs < 1:
            raise ValueError("distill.max_start_epoch and distill.expert_epochs must both be >= 1")
        if self.max_start_epoch + self.expert_epochs > expert_epochs_available + 1:
            raise ValueError(
                f"distill.max_start_epoch ({self.max_start_epoch}) + distill.expert_epochs ({self.expert_epochs}) "
                f"must be <= experts.epochs + 1 ({expert_epochs_available + 1})"
            )

    def run(self, task: DistillTask) -> DistilledSet:
        if task.experts is None:
            raise ValueError("method 'mtt' needs expert trajectories")
        self.check(task.experts.epochs)
        g = generator(task.seed, "distill", "mtt")
        dev = task.device
        x_in, y_in, x_out = (t.to(dev) for t in initial_sets(task, g, self.init))
        x_in.requires_grad_(True)
        x_out.requires_grad_(True)
        has_out = x_out.shape[0] > 0 and task.lambda_oe > 0
        syn_lr = torch.tensor(self.lr_init, device=dev, requires_grad=True)
        opt_img = torch.optim.SGD([x_in, x_out] if has_out else [x_in], lr=self.lr_img, momentum=0.5)
        opt_lr = torch.optim.SGD([syn_lr], lr=self.lr_lr, momentum=0.5)
        net = task.spec.build().to(dev)
        augment = DSA() if self.dsa else NoAugment()
        n_in, n_out = x_in.shape[0], x_out.shape[0]
        batch_in = self.batch_syn or n_in
        batch_out = max(1, round(batch_in * n_out / n_in)) if has_out else 0

        history, start_time = [], time.time()
        bar = tqdm(range(self.iterations), desc="distill (mtt)", unit="it", mininterval=2)
        for it in bar:
            expert = int(torch.randint(task.experts.num_experts, (1,), generator=g))
            start = int(torch.randint(self.max_start_epoch, (1,), generator=g))
            traj = task.experts.trajectory(expert)
            theta0 = traj[start].to(dev)
            target = traj[start + self.expert_epochs].to(dev)

            params = theta0.clone().requires_grad_(True)
            perm_in = torch.randperm(n_in, generator=g)
            perm_out = torch.randperm(n_out, generator=g) if has_out else None
            for step in range(self.syn_steps):
                lo = (step * batch_in) % n_in
                idx = perm_in[lo : lo + batch_in].to(dev)
                batch = [augment(x_in[idx], seed_from(g))]
                if has_out:
                    lo = (step * batch_out) % n_out
                    batch.append(augment(x_out[perm_out[lo : lo + batch_out].to(dev)], seed_from(g)))
                # one forward over InD + outliers (the norm is per image), then split
                logits = functional_call(net, unflatten_params(net, params), (torch.cat(batch),))
                parts = logits.split([b.shape[0] for b in batch])
                loss = trustdd_loss(parts[0], y_in[idx], parts[1] if has_out else None, task.lambda_oe)
                grad = torch.autograd.grad(loss, params, create_graph=True)[0]
                params = params - syn_lr * grad

            match = trajectory_matching_loss(params, theta0, target)
            opt_img.zero_grad(set_to_none=True)
            opt_lr.zero_grad(set_to_none=True)
            match.backward()
            opt_img.step()
            opt_lr.step()

            if it % self.log_every == 0 or it == self.iterations - 1:
                record = {"iteration": it, "loss": float(match.detach()), "lr": float(syn_lr.detach()), "seconds": time.time() - start_time}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.4f}")

        return DistilledSet(
            x_in.detach().cpu(), y_in.cpu(), x_out.detach().cpu(), float(syn_lr.detach()), "mtt", history
        )
