"""What the stages share about images: the input transform, resizing, class-balanced subsets, and what
the prepare-data stage writes (the InD datasets themselves are in :mod:`trustdd.datasets`).

Everything is kept as uint8 tensors of shape N x C x H x W (the InD shape) until a network needs it;
:func:`normalize` turns them into the float inputs the networks see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from trustdd.whitening import ZCA

if TYPE_CHECKING:
    from trustdd.datasets import DatasetInfo, Split


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


# ---------------------------------------------------------------------------------------------------
# What stage 1 writes and the later stages read
# ---------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Prepared:
    """The InD split (uint8) and its input transform, as written by the prepare-data stage."""

    dataset: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    zca: ZCA | None = None
    checksums: dict[str, str] | None = None  # data.verify false: {file: md5} of the md5-checked files read
    skipped: tuple[tuple[str, str], ...] = ()  # (file, error) of undecodable image files left out

    @property
    def transform(self) -> InputTransform:
        return InputTransform(self.mean, self.std, self.zca)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)

    def to_dict(self) -> dict:
        d = {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "train_x": self.train_x,
            "train_y": self.train_y,
            "test_x": self.test_x,
            "test_y": self.test_y,
        }
        if self.zca is not None:
            d["zca"] = self.zca.to_dict()
        if self.checksums is not None:  # only then, so that a verified dataset's file is unchanged
            d["verified"] = False
            d["checksums"] = dict(self.checksums)
        if self.skipped:
            d["skipped"] = [{"file": f, "error": err} for f, err in self.skipped]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Prepared":
        return cls(
            d["dataset"], tuple(d["classes"]), tuple(d["mean"]), tuple(d["std"]),
            d["train_x"], d["train_y"], d["test_x"], d["test_y"], ZCA.from_dict(d.get("zca")), d.get("checksums"),
            tuple((s["file"], s["error"]) for s in d.get("skipped", ())),
        )


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, rounded to 4 decimals like the registry's
    constants. A channel with one value throughout gets std 1 (normalising it only shifts it)."""
    n, c, h, w = x.shape
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, chunk):
        b = x[start : start + chunk].double() / 255.0
        total += b.sum((0, 2, 3))
        squares += (b * b).sum((0, 2, 3))
    mean = total / (n * h * w)
    std = (squares / (n * h * w) - mean**2).clamp(min=0).sqrt()
    rounded = [round(float(v), 4) for v in std]
    return tuple(round(float(v), 4) for v in mean), tuple(v if v > 0 else 1.0 for v in rounded)


def prepare(
    info: DatasetInfo, split: Split, train_limit: int, generator: torch.Generator, zca_reg: float | None = None
) -> Prepared:
    """Cap the train set to ``train_limit`` images, the same number per class (0 = keep all); with a
    ``zca_reg``, fit ZCA whitening on the (capped, normalised) train images. ``info`` is the resolved entry
    (``DatasetInfo.resolve``); where it has no mean and std (a user's own data), they are those of the
    whole train split (before the cap)."""
    mean, std = (info.mean, info.std) if info.mean else channel_stats(split.train_x)
    train_x, train_y = split.train_x, split.train_y
    if train_limit:
        counts = torch.bincount(train_y, minlength=info.num_classes)
        fewest = int(counts.argmin())
        if int(counts[fewest]) < train_limit // info.num_classes:
            from trustdd.params import ParamsError  # here, not at the top: params imports this module

            name = split.classes[fewest] if split.classes else str(fewest)
            raise ParamsError(
                f"params: data.train_limit: invalid value {train_limit}; expected 0 (the whole train set) or at most "
                f"{info.num_classes * int(counts[fewest])}: the cap takes train_limit / {info.num_classes} classes "
                f"images of every class, and class {name!r} has {int(counts[fewest])} train images"
            )
        pick = stratified_subset(train_y, train_limit // info.num_classes, generator)
        train_x, train_y = train_x[pick], train_y[pick]
    zca = ZCA.fit(normalize(train_x, mean, std), zca_reg) if zca_reg is not None else None
    classes = split.classes or tuple(str(c) for c in range(info.num_classes))
    return Prepared(
        info.name, classes, mean, std, train_x, train_y, split.test_x, split.test_y, zca, split.checksums, split.skipped
    )
