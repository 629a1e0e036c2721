"""Differentiable Siamese Augmentation (Zhao & Bilen 2021).

One call draws ONE op at random (color, crop, cutout, flip, scale or rotate) and its parameters from a
seed: per image (training), or once for the whole batch (``shared=True``). Calling it on a real and a
synthetic batch with the same seed and ``shared=True`` applies exactly the same transform to both (the
"Siamese" part, used by gradient matching). Every op is differentiable in the images, so gradients flow
back into synthetic pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSA:
    ops: tuple[str, ...] = OPS
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5
    flip: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0

    def __post_init__(self) -> None:
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"augment.ops: invalid value {list(self.ops)!r}; valid choices: {', '.join(OPS)}")

    def __call__(self, x: torch.Tensor, seed: int, shared: bool = False) -> torch.Tensor:
        """Augment ``x`` with parameters drawn from ``seed``: one draw per image, or (``shared``) one
        draw for the whole batch, so that a real and a synthetic batch of different sizes get exactly
        the same transform (DSA's Siamese mode, used by gradient matching)."""
        g = torch.Generator().manual_seed(int(seed))
        op = self.ops[int(torch.randint(len(self.ops), (1,), generator=g))]
        draws = 1 if shared else x.shape[0]
        return getattr(self, f"_{op}")(x, g, draws)

    # -- photometric -------------------------------------------------------------------------------
    def _color(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        r = lambda: torch.rand(n, 1, 1, 1, generator=g).to(x.device, x.dtype)  # noqa: E731
        x = x + (r() - 0.5) * self.brightness
        mean_c = x.mean(dim=1, keepdim=True)
        x = (x - mean_c) * (r() * self.saturation) + mean_c
        mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean_all) * (r() + self.contrast) + mean_all

    def _cutout(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        size_h, size_w = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        cy = torch.randint(0, h, (n, 1, 1), generator=g).to(x.device)
        cx = torch.randint(0, w, (n, 1, 1), generator=g).to(x.device)
        top, left = cy - size_h // 2, cx - size_w // 2
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (ys >= top) & (ys < top + size_h) & (xs >= left) & (xs < left + size_w)
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        flip = (torch.rand(n, 1, 1, 1, generator=g) < self.flip).to(x.device)
        return torch.where(flip, x.flip(3), x)

    # -- geometric, through one affine grid --------------------------------------------------------
    def _warp(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.expand(x.shape[0], 2, 3)  # one row per image, or one shared row
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    def _crop(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        # A random crop of the zero-padded image == an integer translation by up to crop * size pixels.
        h, w = x.shape[-2:]
        max_y, max_x = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
        sy = torch.randint(-max_y, max_y + 1, (n,), generator=g).float()
        sx = torch.randint(-max_x, max_x + 1, (n,), generator=g).float()
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = 2 * sx / w
        theta[:, 1, 2] = 2 * sy / h
        return self._warp(x, theta)

    def _scale(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        lo = 1.0 / self.scale
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.rand(n, generator=g) * (self.scale - lo) + lo
        theta[:, 1, 1] = torch.rand(n, generator=g) * (self.scale - lo) + lo
        return self._warp(x, theta)

    def _rotate(self, x: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
        angle = (torch.rand(n, generator=g) - 0.5) * 2 * self.rotate * math.pi / 180
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = -torch.sin(angle), torch.cos(angle)
        return self._warp(x, theta)


class NoAugment:
    """Identity with the same call signature as :class:`DSA`."""

    def __call__(self, x: torch.Tensor, seed: int, shared: bool = False) -> torch.Tensor:
        return x
