"""Pseudo-Outlier Exposure: corruptions that turn InD images into outliers.

Every corruption takes float images in [0, 1] of shape N x C x H x W (any H, W; 1 or 3 channels) and a
``torch.Generator``, works on the whole batch at once, and returns images of the same shape in [0, 1].
The paper's four (jigsaw, invert, pixelate, speckle), the others of the TrustDD OE code (uniform
speckle, RGB ghost, mean and geometric mean of two images) and three more (rotate-and-flip, strong
blur, patch shuffle at random grid sizes). A corruption is a small dataclass whose fields are its
documented severity knobs, registered by name.

Each corruption owns the rules for its knobs: ``check(shape)`` raises a ValueError naming the params key
(``outliers.options.<name>.<knob>``), the value and what is valid. Without a shape it checks what needs
no image (run on construction); with the C x H x W of the images it also checks what depends on their
size, as params validation does with the InD shape and every call does with its batch.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from functools import lru_cache

import torch

from trustdd.options import Plugin
from trustdd.registry import Registry

CORRUPTIONS: Registry[type] = Registry("outliers.corruptions")

Shape = typing.Optional[typing.Tuple[int, int, int]]


class Corruption(Plugin):
    """Base class: ``check(shape)`` then ``__call__(x, g)``; a corruption without knobs checks nothing.
    ``min_batch``: the fewest images a call needs (the mixing corruptions pair images of one batch).
    Built by name with ``trustdd.options.make(CORRUPTIONS, name, options, shape=shape)``."""

    options_key = "outliers.options.{name}"
    min_batch = 1

    def __post_init__(self) -> None:
        self.check()

    def check(self, shape: Shape = None, **context) -> None:
        """Raise ValueError naming ``outliers.options.<name>.<knob>`` if a knob is out of range (for images of
        C x H x W ``shape``, when given)."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _invalid(name: str, knob: str, value, expected: str) -> ValueError:
    return ValueError(f"outliers.options.{name}.{knob}: invalid value {value!r}; expected {expected}")


def _finite_at_least(name: str, knob: str, value: float, low: float) -> None:
    if not (math.isfinite(value) and value >= low):
        raise _invalid(name, knob, value, f"a finite number >= {low:g}")


def _grid_fits(name: str, knob: str, grid: int, shape: Shape) -> None:
    if grid < 2:
        raise _invalid(name, knob, grid, "an integer >= 2 (tiles per side)")
    if shape is not None and grid > min(shape[1:]):
        raise _invalid(name, knob, grid, f"at most the image side, {min(shape[1:])} (images are {shape[1]}x{shape[2]})")


@CORRUPTIONS.register("jigsaw")
@dataclass(frozen=True)
class Jigsaw(Corruption):
    """Cut the image into a ``grid x grid`` array of tiles and shuffle them (a random non-identity
    permutation per image). With grid 4 on 32x32 this is the paper's shuffle of half-quadrants; sizes
    that ``grid`` does not divide keep their remainder border in place. ``grid``: 2 to the image side."""

    grid: int = 4

    def check(self, shape: Shape = None, **context) -> None:
        _grid_fits("jigsaw", "grid", self.grid, shape)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.check(tuple(x.shape[1:]))
        n, c, h, w = x.shape
        k = self.grid
        th, tw = h // k, w // k
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
class Invert(Corruption):
    """``1 - x`` on the G and B channels, R kept (the paper's colour inversion); ``1 - x`` on grayscale."""

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[1] == 1:
            return 1 - x
        out = x.clone()
        out[:, 1:3] = 1 - x[:, 1:3]
        return out


def _box_resize(n_in: int, n_out: int) -> torch.Tensor:
    """The ``n_out x n_in`` matrix of a 1-D box resize as PIL's ``BOX`` filter does it (float64).

    Output pixel i spans ``[i, i + 1) x scale`` input pixels, ``scale = n_in / n_out``, widened to one pixel
    when upsampling; every input pixel whose CENTRE falls in the span (upper edge included) counts once,
    and the row is normalised. So a pixel is never split between outputs: downsampling partitions the
    input into runs of whole pixels (32 -> 6: 5, 6, 5, 5, 6, 5) and upsampling copies the input pixel
    under each output pixel's centre. The span edges are computed in PIL's order of float operations.
    """
    scale = n_in / n_out
    width = max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    lo = torch.floor(centre - width / 2 + 0.5).clamp(min=0)
    hi = torch.floor(centre + width / 2 + 0.5).clamp(max=n_in)
    j = torch.arange(n_in, dtype=torch.float64)
    t = (j[None, :] - centre[:, None] + 0.5) * (1.0 / width)  # offset from the centre, in spans
    inside = (t > -0.5) & (t <= 0.5) & (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])
    weights = inside.double()
    return weights / weights.sum(dim=1, keepdim=True)


@lru_cache(maxsize=64)
def _mosaic_matrix(side: int, blocks: int) -> torch.Tensor:
    """``side x side``: box-downsample to ``blocks`` then box-upsample back, as one matrix."""
    return (_box_resize(blocks, side) @ _box_resize(side, blocks)).float()


@CORRUPTIONS.register("pixelate")
@dataclass(frozen=True)
class Pixelate(Corruption):
    """Mosaic, as the TrustDD code makes it with PIL: a ``BOX`` resize down to ``int(factor x side)``
    blocks per axis (6x6 for 32x32 at 0.2, 5x5 for 28x28), then a ``BOX`` resize back up. PIL's box
    filter gives each input pixel to exactly one block (the one its centre falls in; blocks are 5 or 6
    pixels wide at 32 -> 6) and the upsampling paints each block back over exactly those pixels, so every
    output block is the plain mean of the input pixels it covers. Computed on the batch as
    ``M_h @ x @ M_w^T`` with one mosaic matrix per axis: equal to PIL on float (mode F) images to float
    precision, and within 1 grey level of PIL on uint8 images once quantised (PIL rounds after each 1-D
    pass). ``factor`` in (0, 1], and large enough to leave at least one block per side."""

    factor: float = 0.2

    def check(self, shape: Shape = None, **context) -> None:
        if not 0 < self.factor <= 1:
            raise _invalid("pixelate", "factor", self.factor, "a number in (0, 1] (the mosaic's size / the image's)")
        if shape is not None and min(int(side * self.factor) for side in shape[1:]) < 1:
            raise _invalid("pixelate", "factor", self.factor, f"at least 1/{min(shape[1:])}, so that the "
                           f"{shape[1]}x{shape[2]} images keep one block per side")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.check(tuple(x.shape[1:]))
        h, w = x.shape[-2:]
        m_h = _mosaic_matrix(h, int(h * self.factor)).to(x.device, x.dtype)
        m_w = _mosaic_matrix(w, int(w * self.factor)).to(x.device, x.dtype)
        return (m_h @ x @ m_w.T).clamp(0, 1)


@CORRUPTIONS.register("speckle")
@dataclass(frozen=True)
class Speckle(Corruption):
    """Multiplicative Gaussian noise: ``clamp(x + x * N(0, std^2), 0, 1)``; ``std`` >= 0."""

    std: float = 1.0

    def check(self, shape: Shape = None, **context) -> None:
        _finite_at_least("speckle", "std", self.std, 0)

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
class UniformSpeckle(Corruption):
    """Multiplicative uniform noise: ``clamp(x + x * U(-width, width), 0, 1)``; ``width`` >= 0."""

    width: float = 1.0

    def check(self, shape: Shape = None, **context) -> None:
        _finite_at_least("uniform_speckle", "width", self.width, 0)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device, x.dtype)
        return (x + x * noise * self.width).clamp(0, 1)


@CORRUPTIONS.register("rgb_ghost")
@dataclass(frozen=True)
class RGBGhost(Corruption):
    """Chromatic ghosting: the R and B channels are shifted in opposite directions by ``shift`` x size
    (a random direction per image, at least 1 pixel), so edges split into coloured copies. RGB images
    only. ``shift`` in (0, 1), and less than a whole side once rounded to pixels (a roll by the whole
    side would leave the channel where it was)."""

    shift: float = 0.1
    requires_rgb = True  # params validation refuses it for grayscale datasets

    def _pixels(self, side: int) -> int:
        return max(1, round(self.shift * side))

    def check(self, shape: Shape = None, **context) -> None:
        if not 0 < self.shift < 1:
            raise _invalid("rgb_ghost", "shift", self.shift, "a number in (0, 1) (a fraction of the image side)")
        if shape is not None and any(self._pixels(side) >= side for side in shape[1:]):
            raise _invalid("rgb_ghost", "shift", self.shift, f"a shift of less than a whole side once rounded to "
                           f"pixels (images are {shape[1]}x{shape[2]})")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"rgb_ghost needs 3-channel (RGB) images; these have {x.shape[1]} channel(s)")
        self.check(tuple(x.shape[1:]))
        h, w = x.shape[-2:]
        dy, dx = self._pixels(h), self._pixels(w)
        out = x.clone()
        signs = torch.randint(0, 2, (x.shape[0], 2), generator=g) * 2 - 1
        for i, (sy, sx) in enumerate(signs.tolist()):
            out[i, 0] = torch.roll(x[i, 0], shifts=(sy * dy, sx * dx), dims=(0, 1))
            out[i, 2] = torch.roll(x[i, 2], shifts=(-sy * dy, -sx * dx), dims=(0, 1))
        return out


@CORRUPTIONS.register("mean_mix")
@dataclass(frozen=True)
class MeanMix(Corruption):
    """The pixel-wise mean of each image and another image of the batch (usually of another class)."""

    min_batch = 2

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (x + x[_partners(x.shape[0], g).to(x.device)]) / 2


@CORRUPTIONS.register("geometric_mean_mix")
@dataclass(frozen=True)
class GeometricMeanMix(Corruption):
    """The pixel-wise geometric mean ``sqrt(x * x')`` of each image and another image of the batch."""

    min_batch = 2

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (x * x[_partners(x.shape[0], g).to(x.device)]).clamp(min=0).sqrt()


@CORRUPTIONS.register("rotate_flip")
@dataclass(frozen=True)
class RotateFlip(Corruption):
    """An orientation upright object classes never show, random per image: transposed (90 degrees
    then a vertical flip), anti-transposed (270 then a flip) or upside down (180). A horizontal mirror,
    which is natural for most classes, is never produced. Needs square images."""

    def check(self, shape: Shape = None, **context) -> None:
        if shape is not None and shape[1] != shape[2]:
            raise ValueError(f"outliers.corruptions: 'rotate_flip' needs square images; got {shape[1]}x{shape[2]}")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.check(tuple(x.shape[1:]))
        turns = torch.randint(1, 4, (x.shape[0],), generator=g).tolist()
        out = [torch.rot90(img, k, dims=(1, 2)) for img, k in zip(x, turns)]
        return torch.stack([img.flip(1) if k != 2 else img for img, k in zip(out, turns)])


@CORRUPTIONS.register("blur")
@dataclass(frozen=True)
class Blur(Corruption):
    """Strong Gaussian blur with standard deviation ``sigma`` x image size (at least 0.5 pixel; kernel
    2 * 3 sigma + 1, at most the image). ``sigma`` > 0."""

    sigma: float = 0.1

    def check(self, shape: Shape = None, **context) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise _invalid("blur", "sigma", self.sigma, "a finite number > 0 (a fraction of the image side)")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2.functional import gaussian_blur

        s = max(0.5, self.sigma * min(x.shape[-2:]))
        k = 2 * int(3 * s) + 1
        k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)  # torchvision wants an odd kernel no larger than the image
        return gaussian_blur(x, [k, k], [s, s])


@CORRUPTIONS.register("patch_shuffle")
@dataclass(frozen=True)
class PatchShuffle(Corruption):
    """Jigsaw at a random grid size per image, from ``min_grid`` to ``max_grid``: 2 <= min_grid <= max_grid
    <= the image side."""

    min_grid: int = 2
    max_grid: int = 6

    def check(self, shape: Shape = None, **context) -> None:
        _grid_fits("patch_shuffle", "min_grid", self.min_grid, shape)
        _grid_fits("patch_shuffle", "max_grid", self.max_grid, shape)
        if self.min_grid > self.max_grid:
            raise _invalid("patch_shuffle", "max_grid", self.max_grid, f"an integer >= min_grid ({self.min_grid})")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.check(tuple(x.shape[1:]))
        out = torch.empty_like(x)
        grids = torch.randint(self.min_grid, self.max_grid + 1, (x.shape[0],), generator=g)
        for grid in grids.unique().tolist():
            idx = torch.nonzero(grids == grid).flatten()
            out[idx.to(x.device)] = Jigsaw(grid=grid)(x[idx.to(x.device)], g)
        return out
