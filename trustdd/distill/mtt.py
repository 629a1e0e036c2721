"""TrustDD on trajectory matching (MTT, Cazenavette et al. 2022)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.func import functional_call
from tqdm import tqdm

from trustdd.augment import DSA, NoAugment
from trustdd.distill.base import INITS, METHODS, DistilledSet, DistillTask, initial_sets
from trustdd.losses import trustdd_loss
from trustdd.networks import unflatten_params
from trustdd.runtime import generator
from trustdd.training import seed_from


def trajectory_matching_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||student - target||^2 / ||start - target||^2``: 0 when the student lands on the expert's
    later snapshot, 1 when it has not moved from the start (MTT's normalised parameter distance)."""
    return ((student - target) ** 2).sum() / ((start - target) ** 2).sum()


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

    def check(self, ipc: int, expert_epochs_available: int) -> None:
        """Raise ValueError naming the offending ``distill.mtt`` key before any work starts."""
        if self.init not in INITS:
            raise ValueError(f"distill.mtt.init: unknown value {self.init!r}; valid choices: {', '.join(INITS)}")
        # start epochs are drawn from [0, max_start_epoch); snapshots run from epoch 0 to experts.epochs
        if self.max_start_epoch < 1 or self.expert_epochs < 1:
            raise ValueError("distill.mtt.max_start_epoch and distill.mtt.expert_epochs must both be >= 1")
        if self.max_start_epoch + self.expert_epochs > expert_epochs_available + 1:
            raise ValueError(
                f"distill.mtt.max_start_epoch ({self.max_start_epoch}) + distill.mtt.expert_epochs ({self.expert_epochs}) "
                f"must be <= experts.epochs + 1 ({expert_epochs_available + 1})"
            )

    def run(self, task: DistillTask) -> DistilledSet:
        if task.experts is None:
            raise ValueError("method 'mtt' needs expert trajectories")
        self.check(task.ipc, task.experts.epochs)
        g = generator(task.seed, "distill", "mtt")
        dev = task.device
        x_in, y_in, x_out = (t.to(dev) for t in initial_sets(task, g, self.init))
        x_in.requires_grad_(True)
        x_out.requires_grad_(True)
        has_out = task.has_outliers
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
