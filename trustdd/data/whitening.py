"""ZCA whitening of images (MTT applies it to CIFAR), fitted once on the normalised InD train set.

``whiten(x) = (x - mean) U diag(1/sqrt(s + reg)) U^T`` with ``U, s`` the eigenvectors and eigenvalues
of the pixel covariance; ``unwhiten`` is its exact inverse. ``reg`` (MTT: 0.1) keeps the low-variance
directions from being blown up. Only ``mean, U, s, reg`` are stored, so both directions stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ZCA:
    mean: torch.Tensor  # D (= C*H*W)
    eigvecs: torch.Tensor  # D x D, columns
    eigvals: torch.Tensor  # D
    reg: float

    @classmethod
    def fit(cls, x: torch.Tensor, reg: float = 0.1, batch_size: int = 8192) -> "ZCA":
        """Fit on float images N x C x H x W (already normalised); float64 accumulation."""
        if reg <= 0:
            raise ValueError(f"data.zca_reg: invalid value {reg}; expected a number > 0")
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[0] < 2:
            raise ValueError("ZCA needs at least 2 images to fit")
        mean = flat.double().mean(0)
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
        for i in range(0, flat.shape[0], batch_size):
            centred = flat[i : i + batch_size].double() - mean
            cov += centred.T @ centred
        cov /= flat.shape[0] - 1
        eigvals, eigvecs = torch.linalg.eigh(cov)
        return cls(mean.float(), eigvecs.float(), eigvals.clamp_min(0).float(), float(reg))

    def _apply(self, x: torch.Tensor, power: float, inverse: bool) -> torch.Tensor:
        shape = x.shape
        u = self.eigvecs.to(x.device, torch.float64)
        scale = (self.eigvals.to(x.device, torch.float64) + self.reg) ** power
        flat = x.reshape(shape[0], -1).double()
        mean = self.mean.to(x.device, torch.float64)
        if not inverse:
            flat = flat - mean
        out = ((flat @ u) * scale) @ u.T
        if inverse:
            out = out + mean
        return out.to(x.dtype).reshape(shape)

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, -0.5, inverse=False)

    def unwhiten(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, 0.5, inverse=True)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "eigvecs": self.eigvecs, "eigvals": self.eigvals, "reg": self.reg}

    @classmethod
    def from_dict(cls, d: dict | None) -> "ZCA | None":
        return None if d is None else cls(d["mean"], d["eigvecs"], d["eigvals"], float(d["reg"]))
