"""Pseudo-Outlier Exposure: corruptions that turn InD images into outliers.

Every corruption takes float images in [0, 1] of shape N x C x H x W (any H, W; 1 or 3 channels) and a
``torch.Generator``, works on the whole batch at once, and returns images of the same shape in [0, 1].
The four of the TrustDD paper are here; a corruption is a small dataclass whose fields are its
documented severity knobs, registered by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trustdd.registry import Registry

CORRUPTIONS: Registry[type] = Registry("outliers.corruptions")


@CORRUPTIONS.register("jigsaw")
@dataclass(frozen=True)
class Jigsaw:
    """Cut the image into a ``grid x grid`` array of tiles and shuffle them (a random non-identity
    permutation per image). With grid 4 on 32x32 this is the paper's shuffle of half-quadrants; sizes
    that ``grid`` does not divide keep their remainder border in place."""

    grid: int = 4

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.grid
        th, tw = h // k, w // k
        if k < 2 or th < 1 or tw < 1:
            raise ValueError(f"jigsaw.grid: {k} must be >= 2 and at most the image size ({h}x{w})")
        core = x[:, :, : th * k, : tw * k]
        tiles = core.reshape(n, c, k, th, k, tw).permute(0, 2, 4, 1, 3, 5).reshape(n, k * k, c, th, tw)
        perm = torch.rand(n, k * k, generator=g).argsort(dim=1)
        identity = (perm == torch.arange(k * k)).all(dim=1)
        perm[identity] = perm[identity].roll(1, dims=1)  # never leave an image unchanged
        tiles = torch.gather(tiles, 1, perm.to(x.device).view(n, k * k, 1, 1, 1).expand_as(tiles))
        shuffled = tiles.reshape(n, k, k, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th * k, tw * k)
        out = x.clone()
        out[:, :, : th * k, : tw * k] = shuffled
        return out


@CORRUPTIONS.register("invert")
@dataclass(frozen=True)
class Invert:
    """``1 - x`` on the G and B channels, R kept (the paper's colour inversion); ``1 - x`` on grayscale."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[1] == 1:
            return 1 - x
        out = x.clone()
        out[:, 1:3] = 1 - x[:, 1:3]
        return out


@CORRUPTIONS.register("pixelate")
@dataclass(frozen=True)
class Pixelate:
    """Mosaic: box-downsample to ``factor`` x size (6x6 for 32x32 at 0.2), then box-upsample back."""

    factor: float = 0.2

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not 0 < self.factor < 1:
            raise ValueError(f"pixelate.factor: {self.factor} must be in (0, 1)")
        h, w = x.shape[-2:]
        small = F.adaptive_avg_pool2d(x, (max(1, round(h * self.factor)), max(1, round(w * self.factor))))
        return F.interpolate(small, size=(h, w), mode="nearest")


@CORRUPTIONS.register("speckle")
@dataclass(frozen=True)
class Speckle:
    """Multiplicative Gaussian noise: ``clamp(x + x * N(0, std^2), 0, 1)``."""

    std: float = 1.0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
        return (x + x * noise * self.std).clamp(0, 1)


def make_corruption(name: str, options: dict | None = None):
    """Build a registered corruption; ``options`` are its severity fields (e.g. ``{"grid": 2}``)."""
    cls = CORRUPTIONS.get(name)
    try:
        return cls(**(options or {}))
    except TypeError as err:
        fields = ", ".join(cls.__dataclass_fields__) or "none"
        raise ValueError(f"outliers.options.{name}: {options!r} is not valid ({err}); its options: {fields}") from None
