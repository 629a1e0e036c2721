"""Pseudo-Outlier Exposure: corruptions that turn InD images into outliers.

Every corruption takes float images in [0, 1] of shape N x C x H x W (any H, W; 1 or 3 channels) and a
``torch.Generator``, works on the whole batch at once, and returns images of the same shape in [0, 1].
The paper's four (jigsaw, invert, pixelate, speckle), the others of the TrustDD OE code (uniform
speckle, RGB ghost, mean and geometric mean of two images) and three more (rotate-and-flip, strong
blur, patch shuffle at random grid sizes). A corruption is a small dataclass whose fields are its
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


def _partners(n: int, g: torch.Generator) -> torch.Tensor:
    """For each image in a batch, the index of another one: a cyclic shift by a random non-zero offset."""
    if n < 2:
        raise ValueError("mixing corruptions need a batch of at least 2 images")
    return (torch.arange(n) + torch.randint(1, n, (1,), generator=g)) % n


@CORRUPTIONS.register("uniform_speckle")
@dataclass(frozen=True)
class UniformSpeckle:
    """Multiplicative uniform noise: ``clamp(x + x * U(-width, width), 0, 1)``."""

    width: float = 1.0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device, x.dtype)
        return (x + x * noise * self.width).clamp(0, 1)


@CORRUPTIONS.register("rgb_ghost")
@dataclass(frozen=True)
class RGBGhost:
    """Chromatic ghosting: the R and B channels are shifted in opposite directions by ``shift`` x size
    (a random direction per image), so edges split into coloured copies. RGB images only."""

    shift: float = 0.1
    requires_rgb = True  # params validation refuses it for grayscale datasets

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"rgb_ghost needs 3-channel (RGB) images; these have {x.shape[1]} channel(s)")
        h, w = x.shape[-2:]
        dy, dx = max(1, round(self.shift * h)), max(1, round(self.shift * w))
        out = x.clone()
        signs = torch.randint(0, 2, (x.shape[0], 2), generator=g) * 2 - 1
        for i, (sy, sx) in enumerate(signs.tolist()):
            out[i, 0] = torch.roll(x[i, 0], shifts=(sy * dy, sx * dx), dims=(0, 1))
            out[i, 2] = torch.roll(x[i, 2], shifts=(-sy * dy, -sx * dx), dims=(0, 1))
        return out


@CORRUPTIONS.register("mean_mix")
@dataclass(frozen=True)
class MeanMix:
    """The pixel-wise mean of each image and another image of the batch (usually of another class)."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (x + x[_partners(x.shape[0], g).to(x.device)]) / 2


@CORRUPTIONS.register("geometric_mean_mix")
@dataclass(frozen=True)
class GeometricMeanMix:
    """The pixel-wise geometric mean ``sqrt(x * x')`` of each image and another image of the batch."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (x * x[_partners(x.shape[0], g).to(x.device)]).clamp(min=0).sqrt()


@CORRUPTIONS.register("rotate_flip")
@dataclass(frozen=True)
class RotateFlip:
    """An orientation upright object classes never show, random per image: transposed (90 degrees
    then a vertical flip), anti-transposed (270 then a flip) or upside down (180). A horizontal mirror,
    which is natural for most classes, is never produced. Needs square images."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotate_flip needs square images; got {x.shape[-2]}x{x.shape[-1]}")
        turns = torch.randint(1, 4, (x.shape[0],), generator=g).tolist()
        out = [torch.rot90(img, k, dims=(1, 2)) for img, k in zip(x, turns)]
        return torch.stack([img.flip(1) if k != 2 else img for img, k in zip(out, turns)])


@CORRUPTIONS.register("blur")
@dataclass(frozen=True)
class Blur:
    """Strong Gaussian blur with standard deviation ``sigma`` x image size (kernel 2 * 3 sigma + 1)."""

    sigma: float = 0.1

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2.functional import gaussian_blur

        s = max(0.5, self.sigma * min(x.shape[-2:]))
        k = 2 * int(3 * s) + 1
        k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)  # torchvision wants an odd kernel no larger than the image
        return gaussian_blur(x, [k, k], [s, s])


@CORRUPTIONS.register("patch_shuffle")
@dataclass(frozen=True)
class PatchShuffle:
    """Jigsaw at a random grid size between ``min_grid`` and ``max_grid`` per batch call."""

    min_grid: int = 2
    max_grid: int = 6

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not 2 <= self.min_grid <= self.max_grid:
            raise ValueError(f"patch_shuffle: need 2 <= min_grid <= max_grid; got {self.min_grid}, {self.max_grid}")
        out = torch.empty_like(x)
        grids = torch.randint(self.min_grid, self.max_grid + 1, (x.shape[0],), generator=g)
        for grid in grids.unique().tolist():
            idx = torch.nonzero(grids == grid).flatten()
            out[idx.to(x.device)] = Jigsaw(grid=grid)(x[idx.to(x.device)], g)
        return out


def make_corruption(name: str, options: dict | None = None):
    """Build a registered corruption; ``options`` are its severity fields (e.g. ``{"grid": 2}``)."""
    cls = CORRUPTIONS.get(name)
    try:
        return cls(**(options or {}))
    except TypeError as err:
        fields = ", ".join(cls.__dataclass_fields__) or "none"
        raise ValueError(f"outliers.options.{name}: {options!r} is not valid ({err}); its options: {fields}") from None
