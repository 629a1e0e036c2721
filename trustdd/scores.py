"""OOD score functions, one small class each, in a registry. Higher score = more in-distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trustdd.registry import Registry

SCORES: Registry[type] = Registry("evaluate.scores")


@SCORES.register("msp")
@dataclass(frozen=True)
class MaxSoftmax:
    """Maximum softmax probability (Hendrycks & Gimpel 2017)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1).max(dim=1).values


@SCORES.register("energy")
@dataclass(frozen=True)
class Energy:
    """Negative free energy, ``T * logsumexp(logits / T)`` (Liu et al. 2020)."""

    temperature: float = 1.0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.temperature * torch.logsumexp(logits / self.temperature, dim=1)
