"""TrustDD on trajectory matching (MTT, Cazenavette et al. 2022).

Two ways to get the image gradient of the matching loss, equal to float precision:

- ``memory: unrolled`` (MTT): the student's ``syn_steps`` SGD steps are one autograd graph, so memory grows
  with ``syn_steps`` x the images per step.
- ``memory: constant`` (TESLA, Cui et al. 2023): the steps run without a graph, keeping only each step's
  parameter vector; the exact gradient is then accumulated backwards, one step at a time, by recomputing
  that step's gradient with a graph (a Hessian-vector product carries the adjoint to the step before).
  With ``chunk`` > 0 each step is recomputed ``chunk`` images at a time, so memory is flat in both
  ``syn_steps`` and the images per step, at the price of one extra forward-backward per step.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from trustdd.distill.base import INITS, METHODS, DistillTask, DivergenceGuard, LossLog, Method, initial_sets
from trustdd.distill.distilled import DistilledSet, StartingSets
from trustdd.nn.augment import DSA, NoAugment
from trustdd.nn.losses import oe_loss, trustdd_loss
from trustdd.nn.networks import unflatten_params
from trustdd.nn.training import seed_from
from trustdd.runtime import generator

MEMORY = ("unrolled", "constant")
# hard: class indices. expert (TESLA): fixed soft labels, the experts' mean final logits on the starting images.
# learned (DATM): those logits as a starting point, then optimised with the images (SGD, lr_label, momentum 0.9).
LABELS = ("hard", "expert", "learned")


def trajectory_matching_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||student - target||^2 / ||start - target||^2``: 0 when the student lands on the expert's
    later snapshot, 1 when it has not moved from the start (MTT's normalised parameter distance)."""
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()


@dataclass(frozen=True)
class StudentStep:
    """What one student step draws: which synthetic images it sees and its augmentation seeds."""

    idx_in: torch.Tensor
    seed_in: int
    idx_out: torch.Tensor | None = None
    seed_out: int = 0


@dataclass
class Student:
    """The synthetic sets, the net and the loss one student step trains with."""

    net: nn.Module
    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor | None  # None: plain MTT (no outliers, or lambda_oe 0)
    lambda_oe: float
    augment: DSA | NoAugment
    label_logits: torch.Tensor | None = None  # soft labels: targets are softmax(label_logits) (learnable or fixed)

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        """The InD targets of a step: class indices, or soft labels (class probabilities)."""
        if self.label_logits is None:
            return self.y_in[idx]
        return torch.softmax(self.label_logits[idx], dim=1)

    def inputs(self, step: StudentStep, x_in: torch.Tensor, x_out: torch.Tensor | None) -> list[torch.Tensor]:
        batch = [self.augment(x_in[step.idx_in], step.seed_in)]
        if x_out is not None:
            batch.append(self.augment(x_out[step.idx_out], step.seed_out))
        return batch

    def logits(self, params: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, unflatten_params(self.net, params), (images,))

    def mean_loss(self, params: torch.Tensor, step: StudentStep, batch: list[torch.Tensor]) -> torch.Tensor:
        """``CE(S_in batch) + lambda_oe * OE(S_out batch)``: one forward over InD + outliers, then split."""
        parts = self.logits(params, torch.cat(batch)).split([b.shape[0] for b in batch])
        return trustdd_loss(parts[0], self.targets(step.idx_in), parts[1] if len(parts) > 1 else None, self.lambda_oe)

    def image_weights(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """The same loss as a weighted sum over the images of ``torch.cat(batch)`` (InD first), so it can be
        split into chunks: 1/n_in per InD image, lambda_oe/n_out per outlier."""
        n_in = batch[0].shape[0]
        weights = [torch.full((n_in,), 1.0 / n_in, device=batch[0].device, dtype=batch[0].dtype)]
        if len(batch) > 1:
            n_out = batch[1].shape[0]
            weights.append(torch.full((n_out,), self.lambda_oe / n_out, device=batch[1].device, dtype=batch[1].dtype))
        return torch.cat(weights)

    def chunk_loss(self, params: torch.Tensor, images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """This chunk's share of :meth:`mean_loss`: its first ``len(targets)`` images are InD, the rest
        outliers (the norm is per image, so chunks are independent)."""
        logits = self.logits(params, images)
        k = targets.shape[0]
        per_image = []
        if k:
            per_image.append(F.cross_entropy(logits[:k], targets, reduction="none"))
        if k < logits.shape[0]:
            per_image.append(oe_loss(logits[k:], reduction="none"))
        return (torch.cat(per_image) * weights).sum()


def unrolled_gradients(
    student: Student, theta0: torch.Tensor, target: torch.Tensor, syn_lr: torch.Tensor, steps: list[StudentStep]
) -> torch.Tensor:
    """MTT: one graph through all student steps; ``backward`` fills the grads of the images and the lr.
    Returns the matching loss."""
    params = theta0.clone().requires_grad_(True)
    for step in steps:
        batch = student.inputs(step, student.x_in, student.x_out)
        grad = torch.autograd.grad(student.mean_loss(params, step, batch), params, create_graph=True)[0]
        params = params - syn_lr * grad
    match = trajectory_matching_loss(params, theta0, target)
    match.backward()
    return match.detach()


def constant_memory_gradients(
    student: Student,
    theta0: torch.Tensor,
    target: torch.Tensor,
    syn_lr: torch.Tensor,
    steps: list[StudentStep],
    chunk: int = 0,
) -> torch.Tensor:
    """The same gradients as :func:`unrolled_gradients` without the unrolled graph (TESLA).

    With ``theta_{i+1} = theta_i - lr * g_i(theta_i, X)`` and the adjoint ``a_i = dL/dtheta_i``:
    ``dL/dX += -lr * d(g_i . a_{i+1})/dX``, ``dL/dlr += -(g_i . a_{i+1})`` and
    ``a_i = a_{i+1} - lr * H_i a_{i+1}``, for i from the last step back to the first. X is the synthetic
    images, outliers and (when learned) soft-label logits. Memory: one step's graph (one chunk's, with
    ``chunk`` > 0) plus ``syn_steps`` parameter vectors. Returns the matching loss.
    """
    lr = syn_lr.detach()
    x_in, x_out = student.x_in, student.x_out
    thetas, params = [], theta0.detach()
    for step in steps:  # forward: no graph, keep each step's start
        thetas.append(params)
        with torch.no_grad():
            batch = student.inputs(step, x_in.detach(), None if x_out is None else x_out.detach())
            targets = student.targets(step.idx_in)
        images, weights = torch.cat(batch), student.image_weights(batch)
        p = params.clone().requires_grad_(True)
        grad = torch.zeros_like(p)
        for sl, t in _chunks(batch, targets, chunk):
            grad += torch.autograd.grad(student.chunk_loss(p, images[sl], t, weights[sl]), p)[0]
        params = params - lr * grad
    match = trajectory_matching_loss(params, theta0, target)
    adjoint = 2 * (params - target) / ((theta0 - target) ** 2).sum()
    grad_lr = torch.zeros_like(lr)
    for step, theta in zip(reversed(steps), reversed(thetas)):  # backward: one step at a time
        batch = student.inputs(step, x_in, x_out)  # with the graph from the synthetic images
        targets = student.targets(step.idx_in)  # with the graph from learned label logits
        images, weights = torch.cat(batch), student.image_weights(batch)
        outputs = [images] + ([targets] if targets.requires_grad else [])
        leaves = [o.detach().requires_grad_(True) for o in outputs]
        t_leaf = leaves[1] if targets.requires_grad else targets
        p = theta.clone().requires_grad_(True)
        hvp, dot = torch.zeros_like(theta), torch.zeros_like(lr)
        grads = [torch.zeros_like(leaf) for leaf in leaves]
        for sl, t in _chunks(batch, t_leaf, chunk):
            g = torch.autograd.grad(student.chunk_loss(p, leaves[0][sl], t, weights[sl]), p, create_graph=True)[0]
            g_dot_a = (g * adjoint).sum()
            h, *gx = torch.autograd.grad(g_dot_a, [p, *leaves], allow_unused=True)
            hvp += h
            for acc, gi in zip(grads, gx):
                if gi is not None:  # a chunk of outliers only does not touch the labels
                    acc += gi
            dot += g_dot_a.detach()
        # through the augmentation (and the labels' softmax) into the synthetic tensors' .grad
        torch.autograd.backward(outputs, [-lr * gi for gi in grads])
        grad_lr -= dot
        adjoint = adjoint - lr * hvp
    syn_lr.grad = grad_lr if syn_lr.grad is None else syn_lr.grad + grad_lr
    return match.detach()


def _chunks(batch: list[torch.Tensor], targets: torch.Tensor, chunk: int):
    """(slice of ``torch.cat(batch)``, the InD targets inside it) for each chunk of ``chunk`` images."""
    n, n_in = sum(b.shape[0] for b in batch), batch[0].shape[0]
    size = chunk or n
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        yield slice(lo, hi), targets[min(lo, n_in) : min(hi, n_in)]


@torch.no_grad()
def expert_logits(task: DistillTask, x: torch.Tensor) -> torch.Tensor:
    """Soft-label logits of the synthetic images: the mean over experts of each expert's final logits."""
    net = task.spec.build().to(x.device)
    net.eval()
    total = torch.zeros(x.shape[0], task.num_classes, device=x.device)
    for i in range(task.experts.num_experts):
        final = task.experts.trajectory(i)[-1].to(x.device)
        total += functional_call(net, unflatten_params(net, final), (x,))
    return total / task.experts.num_experts


@METHODS.register("mtt")
@dataclass(frozen=True)
class TrajectoryMatching(Method):
    """TrustDD on MTT (Cazenavette et al. 2022).

    Each iteration: pick an expert and a start epoch t < max_start_epoch; from theta_t the student takes
    ``syn_steps`` SGD steps (learnable lr) on ``CE(S_in) + lambda_oe * OE(S_out)`` with DSA; the loss is
    ``||theta_student - theta_{t+M}||^2 / ||theta_t - theta_{t+M}||^2`` with M = expert_epochs.
    With no outliers this is plain MTT.

    ``trajectories`` > 1 matches that many (expert, start epoch, student batches) draws per iteration
    and averages their gradients before the one optimiser step. On a group of N processes
    (``task.group``, ``parallel.nproc``) the draws are the same on every rank (one seed stream), rank r
    matches draws r, r + N, ... and the gradients are averaged over the ranks: the result is what one
    process gives, up to float rounding, and every rank holds the same sets. ``trajectories`` a
    multiple of N keeps every rank busy.
    """

    # The defaults are params.yaml's distill.mtt (the CPU default); the papers' values are in presets/.
    iterations: int = 100
    syn_steps: int = 10
    expert_epochs: int = 1
    max_start_epoch: int = 5
    lr_img: float = 300.0
    lr_lr: float = 1e-4
    lr_init: float = 0.05
    batch_syn: int = 50  # synthetic InD images per student step; 0 = all of S_in
    init: str = "kmeans"  # S_in starts from real images: "random" per class, or "kmeans" medoids
    memory: str = "unrolled"  # unrolled (MTT) | constant (TESLA's step-by-step recomputation, same gradients)
    chunk: int = 0  # memory constant: images per recomputed forward (0 = a whole step); needs a per-image norm
    labels: str = "hard"  # hard | expert | learned (see LABELS)
    lr_label: float = 2.0  # labels learned: SGD lr of the label logits (DATM's)
    dsa: bool = True  # differentiable Siamese augmentation in the student steps
    log_every: int = 10
    trajectories: int = 1  # expert trajectories matched per iteration, divided over the processes; gradients averaged

    needs_experts = True
    parallel = True  # trajectory-parallel over the processes of task.group

    def check(self, ipc: int | None = None, experts_epochs: int | None = None, norm: str | None = None, **context) -> None:
        """Raise ValueError naming the offending ``distill.mtt`` key, its value and what is valid, before any
        work starts. ``norm`` is the network's normalisation, when known (``chunk`` needs a per-image one)."""

        def bad(key: str, expected: str) -> ValueError:
            return ValueError(f"distill.mtt.{key}: invalid value {getattr(self, key)!r}; expected {expected}")

        for key, choices in (("init", INITS), ("memory", MEMORY), ("labels", LABELS)):
            if getattr(self, key) not in choices:
                value, valid = getattr(self, key), ", ".join(choices)
                raise ValueError(f"distill.mtt.{key}: unknown value {value!r}; valid choices: {valid}")
        if self.iterations < 0:
            raise bad("iterations", ">= 0 (0: the starting set)")
        for key in ("syn_steps", "log_every", "expert_epochs", "max_start_epoch", "trajectories"):
            if getattr(self, key) < 1:
                raise bad(key, ">= 1")
        if self.batch_syn < 0:
            raise bad("batch_syn", ">= 0 (0: all of S_in in every student step)")
        for key in ("lr_img", "lr_init", "lr_label"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, "a finite number > 0")
        if not (math.isfinite(self.lr_lr) and self.lr_lr >= 0):
            raise bad("lr_lr", "a finite number >= 0 (0: the student lr stays at lr_init)")
        if self.chunk < 0 or (self.chunk and self.memory != "constant"):
            raise bad("chunk", "0, or > 0 with distill.mtt.memory: constant")
        if self.chunk and norm == "batch":
            raise bad("chunk", "0 with network.norm: batch (a chunk > 0 splits a step's images, which batch norm "
                      "couples; use network.norm: instance)")
        # start epochs are drawn from [0, max_start_epoch); snapshots run from epoch 0 to experts.epochs
        if experts_epochs is not None and self.max_start_epoch + self.expert_epochs > experts_epochs + 1:
            raise ValueError(
                f"distill.mtt.max_start_epoch ({self.max_start_epoch}) + distill.mtt.expert_epochs ({self.expert_epochs}) "
                f"must be <= experts.epochs + 1 ({experts_epochs + 1})"
            )

    def smoke(self) -> dict:
        # 3 iterations, every one from epoch 0 of an expert trained just expert_epochs epochs; syn_steps,
        # batch_syn and the rest stay, so the memory a student step needs is the full run's
        return {"distill.mtt.iterations": 3, "distill.mtt.max_start_epoch": 1, "distill.mtt.log_every": 1,
                "experts.epochs": self.expert_epochs}

    def work(self, ipc: int) -> float:
        return float(self.iterations * self.syn_steps * self.trajectories)

    def run(self, task: DistillTask) -> DistilledSet:
        if task.experts is None:
            raise ValueError("method 'mtt' needs expert trajectories")
        self.check(ipc=task.ipc, experts_epochs=task.experts.epochs, norm=task.spec.norm)
        group = task.group
        if group.is_main and self.trajectories % group.world:
            idle = (f"rank(s) {self.trajectories} to {group.world - 1} match none" if self.trajectories < group.world
                    else "some ranks match one more than others")
            print(f"distill: {group.world} processes share distill.mtt.trajectories {self.trajectories} per iteration, so "
                  f"{idle}; a multiple of {group.world} uses them all", file=sys.stderr)
        g = generator(task.seed, "distill", "mtt")
        dev = task.device
        x_in, y_in, x_out = (t.to(dev) for t in initial_sets(task, g, self.init))
        label_logits = None if self.labels == "hard" else expert_logits(task, x_in)
        group.broadcast_tensors(x_in, y_in, x_out, label_logits)  # one starting point on every rank
        soft = None if label_logits is None else torch.softmax(label_logits, dim=1)
        start = StartingSets.of(x_in, y_in, x_out, self.lr_init, soft)
        x_in.requires_grad_(True)
        x_out.requires_grad_(True)
        has_out = task.has_outliers
        syn_lr = torch.tensor(self.lr_init, device=dev, requires_grad=True)
        opt_img = torch.optim.SGD([x_in, x_out] if has_out else [x_in], lr=self.lr_img, momentum=0.5)
        optimizers = [opt_img, torch.optim.SGD([syn_lr], lr=self.lr_lr, momentum=0.5)]
        if self.labels == "learned":
            label_logits.requires_grad_(True)
            optimizers.append(torch.optim.SGD([label_logits], lr=self.lr_label, momentum=0.9))
        augment = DSA() if self.dsa else NoAugment()
        student = Student(task.spec.build().to(dev), x_in, y_in, x_out if has_out else None, task.lambda_oe, augment, label_logits)
        n_in, n_out = x_in.shape[0], x_out.shape[0]
        batch_in = self.batch_syn or n_in
        batch_out = max(1, round(batch_in * n_out / n_in)) if has_out else 0

        learned = [x_in, x_out] if has_out else [x_in]
        learned += [syn_lr] + ([label_logits] if self.labels == "learned" else [])
        total = self.trajectories  # per iteration, over all ranks; rank r matches draws r, r + N, ...

        log = LossLog(self.log_every, self.iterations)
        guard = DivergenceGuard("distill.mtt", self.iterations)
        bar = tqdm(range(self.iterations), desc="distill (mtt)", unit="it", mininterval=2, disable=not group.is_main)
        for it in bar:
            # every rank draws every rank's trajectories (the same generator state everywhere), then runs its own
            draws = [self._draw_trajectory(task, g, n_in, batch_in, n_out, batch_out) for _ in range(total)]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = 0.0
            for expert, t, steps in draws[group.rank :: group.world]:
                traj = task.experts.trajectory(expert)
                theta0, target = traj[t].to(dev), traj[t + self.expert_epochs].to(dev)
                if self.memory == "constant":  # both add to the .grad of the learned tensors
                    match = constant_memory_gradients(student, theta0, target, syn_lr, steps, self.chunk)
                else:
                    match = unrolled_gradients(student, theta0, target, syn_lr, steps)
                loss += float(match)
            loss = group.sum(loss) / total
            group.average_grads(learned, total)
            if math.isfinite(loss):  # a non-finite loss leaves the set as it was; the guard stops the run
                for opt in optimizers:
                    opt.step()
            guard.check(it, loss, float(syn_lr.detach()))

            if record := log.add(it, {"loss": loss}, lr=float(syn_lr.detach())):
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.4f}")

        final_soft = None if label_logits is None else torch.softmax(label_logits.detach(), dim=1).cpu()
        return DistilledSet(
            x_in.detach().cpu(),
            y_in.cpu(),
            x_out.detach().cpu(),
            float(syn_lr.detach()),
            "mtt",
            start,
            log.records,
            log.seconds,
            final_soft,
        )

    def _draw_trajectory(
        self, task: DistillTask, g: torch.Generator, n_in: int, batch_in: int, n_out: int, batch_out: int
    ) -> tuple[int, int, list[StudentStep]]:
        """One matching problem: an expert, a start epoch t, and the student steps' batches."""
        expert = int(torch.randint(task.experts.num_experts, (1,), generator=g))
        t = int(torch.randint(self.max_start_epoch, (1,), generator=g))
        return expert, t, self._draw_steps(g, n_in, batch_in, n_out, batch_out, task.device)

    def _draw_steps(
        self, g: torch.Generator, n_in: int, batch_in: int, n_out: int, batch_out: int, dev: torch.device
    ) -> list[StudentStep]:
        """Each student step's images (consecutive slices of one permutation per set) and augmentation seeds."""
        perm_in = torch.randperm(n_in, generator=g)
        perm_out = torch.randperm(n_out, generator=g) if batch_out else None
        steps = []
        for step in range(self.syn_steps):
            lo = (step * batch_in) % n_in
            idx_in, seed_in = perm_in[lo : lo + batch_in].to(dev), seed_from(g)
            if perm_out is None:
                steps.append(StudentStep(idx_in, seed_in))
                continue
            lo = (step * batch_out) % n_out
            steps.append(StudentStep(idx_in, seed_in, perm_out[lo : lo + batch_out].to(dev), seed_from(g)))
        return steps
