"""One training loop for every network the pipeline trains: experts, evaluation nets and baselines.

Loss per step: ``CE(f(aug(x_in)), y) + lambda_oe * L_OE(f(aug(x_out)))``. All randomness (batch order,
augmentation seeds, outlier draws) comes from the ``torch.Generator`` passed in, so a run is a pure
function of its seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from trustdd import timing
from trustdd.nn.augment import DSA, NoAugment
from trustdd.nn.losses import trustdd_loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lambda_oe: float = 0.5
    outlier_ratio: float = 1.0  # outlier images per InD image in each batch
    decay_halfway: bool = True  # lr x 0.1 at epochs // 2, as in the DD evaluation protocol


class IndexStream:
    """Endless stream of indices in [0, n): concatenated random permutations (each item once per pass)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.g = n, generator
        self._buf = torch.empty(0, dtype=torch.long)

    def take(self, m: int) -> torch.Tensor:
        while self._buf.numel() < m:
            self._buf = torch.cat([self._buf, torch.randperm(self.n, generator=self.g)])
        out, self._buf = self._buf[:m], self._buf[m:]
        return out


def seed_from(generator: torch.Generator) -> int:
    """Draw a 31-bit seed for a sub-component (augmentation call, network init) from a generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def train_network(
    net: nn.Module,
    x_in: torch.Tensor,
    y_in: torch.Tensor,
    x_out: torch.Tensor | None,
    cfg: TrainConfig,
    generator: torch.Generator,
    augment: DSA | NoAugment | None = None,
    on_epoch: Callable[[int, nn.Module, dict], None] | None = None,
) -> list[dict]:
    """Train ``net`` in place; returns one record per epoch (loss, train accuracy, lr). ``y_in`` holds class
    indices, or one row of class probabilities per image (soft labels: cross-entropy to that row)."""
    augment = augment or NoAugment()
    device = next(net.parameters()).device
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    milestones = [cfg.epochs // 2] if cfg.decay_halfway and cfg.epochs > 1 else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    n_in = x_in.shape[0]
    has_out = x_out is not None and x_out.shape[0] > 0 and cfg.lambda_oe > 0
    out_stream = IndexStream(x_out.shape[0], generator) if has_out else None
    history = []
    net.train()
    clock, timed, first_done = 0.0, 0, False  # wall time and images of the steps after the first (smoke runs')
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n_in, generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, n_in, cfg.batch_size):
            began = time.perf_counter()
            idx = perm[start : start + cfg.batch_size]
            xb = augment(x_in[idx.to(x_in.device)].to(device), seed_from(generator))
            yb = y_in[idx.to(y_in.device)].to(device)
            logits_out = None
            if out_stream is not None:
                # InD and outliers go through the net as one batch, as in the Outlier Exposure code.
                m = max(1, round(idx.numel() * cfg.outlier_ratio))
                oidx = out_stream.take(m).to(x_out.device)
                xo = augment(x_out[oidx].to(device), seed_from(generator))
                logits, logits_out = net(torch.cat([xb, xo])).split([xb.shape[0], m])
            else:
                logits = net(xb)
            loss = trustdd_loss(logits, yb, logits_out, cfg.lambda_oe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * idx.numel()
            if first_done:  # the first step warms kernels and caches up: left out
                clock += time.perf_counter() - began
                timed += idx.numel()
            first_done = True
            correct += int((logits.argmax(1) == (yb.argmax(1) if yb.ndim == 2 else yb)).sum())
        record = {
            "epoch": epoch + 1,
            "loss": total_loss / n_in,
            "train_acc": 100.0 * correct / n_in,
            "lr": opt.param_groups[0]["lr"],
        }
        sched.step()
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch + 1, net, record)
    timing.record(timed, clock)
    return history


@torch.no_grad()
def predict_logits(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every image, in eval mode, batched, returned on the CPU."""
    device = next(net.parameters()).device
    net.eval()
    outs = [net(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)
