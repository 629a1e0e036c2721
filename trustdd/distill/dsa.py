"""TrustDD on gradient matching: dataset condensation with Differentiable Siamese Augmentation
(DC/DSA, Zhao et al. 2021; Zhao & Bilen 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trustdd.distill.base import METHODS, DistillTask, LossLog, Method, initial_sets
from trustdd.distill.distilled import DistilledSet, StartingSets
from trustdd.nn.augment import DSA, NoAugment
from trustdd.nn.losses import oe_loss
from trustdd.nn.networks import init_network
from trustdd.nn.training import TrainConfig, seed_from, train_network
from trustdd.runtime import generator

# (outer_loop, inner_loop) per ipc, as published with DC/DSA and used by TrustDD's code.
PUBLISHED_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10),
}


def gradient_distance(
    g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], eps: float = 1e-6
) -> torch.Tensor:
    """DC's layer-wise gradient distance: for every parameter tensor with an output axis, reshape to
    (outputs, rest) and sum ``1 - cos`` over the output rows; sum over tensors. 1-D tensors (biases,
    norm affines) are skipped, as in the published code. 0 when the gradients are parallel row by row."""
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.dim() == 1:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(1) / (gs.norm(dim=1) * gr.norm(dim=1) + eps)
        total = total + (1 - cos).sum()
    return total


def matching_loss(
    net: nn.Module,
    x_real: torch.Tensor,
    x_syn: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    augment: DSA | NoAugment,
    seed: int,
) -> torch.Tensor:
    """Distance between the gradients of ``loss_fn`` on a real batch and on a synthetic batch, both
    augmented with one shared transform; differentiable in ``x_syn``."""
    params = [p for p in net.parameters() if p.requires_grad]
    g_real = torch.autograd.grad(loss_fn(net(augment(x_real, seed, shared=True))), params)
    g_syn = torch.autograd.grad(loss_fn(net(augment(x_syn, seed, shared=True))), params, create_graph=True)
    return gradient_distance(g_syn, [g.detach() for g in g_real])


def set_matching_loss(
    net: nn.Module,
    real_batches: Sequence[torch.Tensor],
    x_syn: torch.Tensor,
    loss_fns: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    augment: DSA | NoAugment,
    seeds: Sequence[int],
) -> torch.Tensor:
    """Sum over blocks b (a class of S_in, or an outlier block of S_out) of the matching loss between
    ``real_batches[b]`` and the b-th ``len(x_syn) / len(real_batches)`` synthetic images."""
    per_block = x_syn.shape[0] // len(real_batches)
    return sum(
        matching_loss(net, real, x_syn[b * per_block : (b + 1) * per_block], loss_fns[b], augment, seeds[b])
        for b, real in enumerate(real_batches)
    )


def _ce_to(label: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda logits: F.cross_entropy(logits, torch.full((logits.shape[0],), label, device=logits.device))


@METHODS.register("dsa")
@dataclass(frozen=True)
class GradientMatching(Method):
    """TrustDD on DSA.

    Each iteration: a freshly initialised net. For each of ``outer_loop`` steps, S_in is updated to
    match, class by class, the gradients of CE on a real batch of that class; S_out (when there are
    outliers) to match, block by block, the gradients of the OE loss on a real/pseudo outlier batch of
    the block's kind. Two optimisers (SGD, momentum 0.5). Between outer steps the net trains
    ``inner_loop`` epochs on S_in + S_out with ``CE + lambda_oe * OE``. With no outliers this is DSA.
    ``outer_loop``/``inner_loop`` 0 take the published schedule for the ipc (:data:`PUBLISHED_LOOPS`).
    """

    # The defaults are params.yaml's distill.dsa (the CPU default); the papers': 1000 iterations, the
    # published loops (outer_loop and inner_loop 0) and batch_real 256.
    iterations: int = 12
    outer_loop: int = 10
    inner_loop: int = 10
    batch_real: int = 64  # real images per class (and per outlier block) in each matching step
    lr_img: float = 0.1
    lr_net: float = 0.01
    batch_train: int = 256  # synthetic images per step of the inner-loop training
    dsa: bool = True
    log_every: int = 10

    needs_experts = False
    parallel = False  # runs on one process: under parallel.nproc > 1 the distill stage runs it on rank 0 alone

    def loops(self, ipc: int) -> tuple[int, int]:
        published = PUBLISHED_LOOPS.get(ipc)
        if published is None and not (self.outer_loop and self.inner_loop):
            raise ValueError(
                f"distill.dsa.outer_loop/inner_loop: no published schedule for ipc={ipc} (published for ipc "
                f"{', '.join(map(str, PUBLISHED_LOOPS))}); set both to positive integers"
            )
        return (self.outer_loop or published[0], self.inner_loop or published[1])

    def check(self, ipc: int | None = None, experts_epochs: int | None = None, norm: str | None = None, **context) -> None:
        """Raise ValueError naming the offending ``distill.dsa`` key, its value and what is valid, before any
        work starts (the arguments are those of every method's check; DSA needs only ``ipc``)."""
        for key in ("iterations", "outer_loop", "inner_loop"):
            if getattr(self, key) < 0:
                raise ValueError(f"distill.dsa.{key}: invalid value {getattr(self, key)}; expected >= 0")
        for key in ("batch_real", "batch_train", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"distill.dsa.{key}: invalid value {getattr(self, key)}; expected >= 1")
        for key in ("lr_img", "lr_net"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"distill.dsa.{key}: invalid value {value!r}; expected a finite number > 0")
        if ipc is not None:
            self.loops(ipc)

    def smoke(self) -> dict:
        return {"distill.dsa.iterations": 2, "distill.dsa.log_every": 1}  # the loops stay the preset's

    def work(self, ipc: int) -> float:
        outer, inner = self.loops(ipc)
        return float(self.iterations * outer * (1 + inner))  # each outer step: one matching pass, inner epochs

    def run(self, task: DistillTask) -> DistilledSet:
        self.check(ipc=task.ipc)
        outer, inner = self.loops(task.ipc)
        g = generator(task.seed, "distill", "dsa")
        dev = task.device
        x_in, y_in, x_out = (t.to(dev) for t in initial_sets(task, g, "random"))
        start = StartingSets.of(x_in, y_in, x_out, self.lr_net)
        x_in.requires_grad_(True)
        x_out.requires_grad_(True)
        has_out = task.has_outliers
        optimizers = [torch.optim.SGD([x_in], lr=self.lr_img, momentum=0.5)]
        if has_out:
            optimizers.append(torch.optim.SGD([x_out], lr=self.lr_img, momentum=0.5))
        augment = DSA() if self.dsa else NoAugment()
        real_x, pool_x = task.real_x.to(dev), task.pool_x.to(dev)
        class_members = [torch.nonzero(task.real_y == c).flatten() for c in range(task.num_classes)]
        block_members = [task.block_members(c) for c in range(task.num_classes)] if has_out else []
        train_cfg = TrainConfig(
            epochs=inner,
            lr=self.lr_net,
            batch_size=self.batch_train,
            momentum=0.0,
            weight_decay=0.0,
            lambda_oe=task.lambda_oe,
            outlier_ratio=1.0,  # S_out has as many images as S_in
            decay_halfway=False,
        )
        classes = range(task.num_classes)
        ce_losses = [_ce_to(c) for c in classes]
        oe_losses = [oe_loss] * task.num_classes

        def real_batches(source: torch.Tensor, members: list[torch.Tensor]) -> list[torch.Tensor]:
            picks = [m[torch.randperm(m.numel(), generator=g)[: self.batch_real]] for m in members]
            return [source[pick.to(dev)] for pick in picks]

        log = LossLog(self.log_every, self.iterations)
        bar = tqdm(range(self.iterations), desc="distill (dsa)", unit="it", mininterval=2)
        for it in bar:
            net = init_network(task.spec, seed_from(g), dev)
            net.train()
            sums = {"loss_in": 0.0, "loss_out": 0.0}
            for step in range(outer):
                seeds = [seed_from(g) for _ in classes]
                loss_in = set_matching_loss(net, real_batches(real_x, class_members), x_in, ce_losses, augment, seeds)
                loss = loss_in
                sums["loss_in"] += float(loss_in.detach()) / task.num_classes
                if has_out:
                    seeds = [seed_from(g) for _ in classes]
                    loss_out = set_matching_loss(net, real_batches(pool_x, block_members), x_out, oe_losses, augment, seeds)
                    loss = loss + loss_out
                    sums["loss_out"] += float(loss_out.detach()) / task.num_classes
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in optimizers:
                    opt.step()
                if step < outer - 1:  # the net is not trained after the last matching step
                    train_network(net, x_in.detach(), y_in, x_out.detach() if has_out else None, train_cfg, g, augment)

            values = {k: v / outer for k, v in sums.items()}
            if record := log.add(it, {"loss": values["loss_in"] + values["loss_out"], **values}):
                bar.set_postfix(loss=f"{record['loss']:.4f}")

        return DistilledSet(
            x_in.detach().cpu(), y_in.cpu(), x_out.detach().cpu(), self.lr_net, "dsa", start, log.records, log.seconds
        )
