"""uint8 image tensors (N x C x H x W, the InD shape) and the transform that turns them into network
inputs: resizing and channel conversion, class-balanced subsets, crops of the images that ship inside PyPI
packages, and :class:`InputTransform` (per-channel normalisation, then optional ZCA whitening).

Everything is kept as uint8 until a network needs it; :func:`normalize` turns it into floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trustdd.data.whitening import ZCA


def stratified_subset(
    labels: torch.Tensor, per_class: int | list[int], generator: torch.Generator
) -> torch.Tensor:
    """Indices of ``per_class`` random items of every class, sorted by class then draw order. A list gives
    the count for each class index (classes past its end get none)."""
    picks = []
    for c in torch.unique(labels).tolist():
        n = per_class if isinstance(per_class, int) else (per_class[c] if c < len(per_class) else 0)
        members = torch.nonzero(labels == c).flatten()
        if members.numel() < n:
            raise ValueError(f"class {c} has {members.numel()} images, fewer than the {n} asked for")
        picks.append(members[torch.randperm(members.numel(), generator=generator)[:n]])
    return torch.cat(picks)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (or [0,1] float) images -> the float inputs the networks see."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Network inputs -> [0,1] images (clamped), e.g. to draw a grid."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8)


def fit_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 N x C' x H' x W' -> uint8 N x C x H x W: channel conversion and antialiased resize."""
    from torchvision.transforms.v2 import functional as TF  # here: torchvision takes ~3 s to import

    c, h, w = shape
    if images.shape[1] != c:
        if c == 1:
            images = TF.rgb_to_grayscale(images[:, :3])
        elif images.shape[1] == 1:
            images = images.expand(-1, c, -1, -1)
        else:
            raise ValueError(f"cannot convert {images.shape[1]}-channel images to {c} channels")
    if images.shape[-2:] != (h, w):
        images = TF.resize(images, [h, w], antialias=True)
    return images.contiguous()


# ---------------------------------------------------------------------------------------------------
# Crops of images that ship inside PyPI packages (OOD test sets and the embedded OE pool use them)
# ---------------------------------------------------------------------------------------------------


def skimage_image(name: str) -> torch.Tensor:
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr[:, :, :3])).permute(2, 0, 1)  # C x H x W uint8


def random_crops(
    sources: list[torch.Tensor], n: int, shape: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """``n`` seeded square crops (side between the target size and half the smaller image side),
    taken from randomly chosen source images and resized to ``shape``."""
    c, h, w = shape
    out = torch.empty(n, c, h, w, dtype=torch.uint8)
    for i in range(n):
        src = sources[int(torch.randint(len(sources), (1,), generator=generator))]
        full = min(src.shape[-2:])
        lo = min(max(h, w), full)
        hi = max(lo, full // 2)
        side = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        top = int(torch.randint(0, src.shape[-2] - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, src.shape[-1] - side + 1, (1,), generator=generator))
        out[i] = fit_images(src[None, :, top : top + side, left : left + side], shape)[0]
    return out


@dataclass(frozen=True)
class InputTransform:
    """uint8 images -> network inputs: per-channel normalisation, then optional ZCA whitening. Stored
    with prepared data and with every distilled set, so a set is always scored in its own input space."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    zca: ZCA | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, self.mean, self.std)
        return self.zca.whiten(x) if self.zca is not None else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs -> [0,1] images (clamped), e.g. to draw a grid."""
        if self.zca is not None:
            x = self.zca.unwhiten(x)
        return denormalize(x, self.mean, self.std)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "zca": self.zca.to_dict() if self.zca else None}

    @classmethod
    def from_dict(cls, d: dict) -> "InputTransform":
        return cls(tuple(d["mean"]), tuple(d["std"]), ZCA.from_dict(d.get("zca")))

