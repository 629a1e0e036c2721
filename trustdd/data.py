"""In-distribution datasets (a registry), the input transform and image resizing.

Everything is kept as uint8 tensors of shape N x C x H x W (the InD shape) until a network needs it;
:func:`normalize` turns them into the float inputs the networks see.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import check_integrity
from torchvision.transforms.v2 import functional as TF

from trustdd.registry import Registry
from trustdd.whitening import ZCA

# ---------------------------------------------------------------------------------------------------
# In-distribution datasets
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor  # uint8 N x C x H x W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[Path, bool], Split] = field(repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


class DataNotFoundError(FileNotFoundError):
    """Raw files are missing and may not be downloaded; the message says where they were looked for."""


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Folders searched for the .gz files besides ROOT/<Class>/raw, per torchvision class.
IDX_SEARCH_DIRS: dict[str, list[Path]] = {"FashionMNIST": [DEBIAN_FASHION_MNIST]}


# md5 of the UNPACKED IDX files: the same whether the .gz came from the original site or from Debian's
# package (which recompresses them, so the .gz md5s that torchvision checks differ).
IDX_MD5 = {
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


def _stage_idx_files(tv_class: type, root: Path, extra_dirs: list[Path]) -> list[str]:
    """Make sure torchvision's ``ROOT/<Class>/raw`` holds the verified, unpacked IDX files.

    Looks for each ``.gz`` in the raw folder itself, then in ``extra_dirs`` (e.g. the Debian package's
    folder), unpacks it and checks the content md5. Touches no network. Returns the problems found
    (empty when all files are in place).
    """
    raw = root / tv_class.__name__ / "raw"
    expected_md5 = IDX_MD5[tv_class.__name__]
    problems = []
    for filename, _ in tv_class.resources:
        name = filename.removesuffix(".gz")
        unpacked = raw / name
        if unpacked.exists() and check_integrity(str(unpacked), expected_md5[name]):
            continue
        for candidate in [raw / filename] + [d / filename for d in extra_dirs]:
            if not candidate.exists():
                continue
            raw.mkdir(parents=True, exist_ok=True)
            tmp = unpacked.with_suffix(".partial")
            with gzip.open(candidate, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            if check_integrity(str(tmp), expected_md5[name]):
                tmp.replace(unpacked)
                break
            tmp.unlink()
            problems.append(f"{candidate}: content md5 differs from the expected {expected_md5[name]}")
        else:
            problems.append(f"{name}: no verified copy found")
    return problems


def _idx_loader(tv_class: type, hint: str) -> Callable[[Path, bool], Split]:
    def load(root: Path, download: bool) -> Split:
        extra_dirs = IDX_SEARCH_DIRS.get(tv_class.__name__, [])
        problems = _stage_idx_files(tv_class, root, extra_dirs)
        if problems:
            if not download:
                expected = "\n".join(f"  {root / tv_class.__name__ / 'raw' / f}" for f, _ in tv_class.resources)
                looked = "".join(f"\n  {d}/" for d in extra_dirs)
                raise DataNotFoundError(
                    f"dataset {tv_class.__name__}: raw files not found and data.download is false.\n"
                    f"Expected (IDX .gz files, torchvision's md5s):\n{expected}\nAlso looked in:{looked or ' (nowhere else)'}\n"
                    f"To provide them: {hint}, or copy the four .gz files into the raw folder above, "
                    f"or set data.download: true on a machine with network.\nProblems: {'; '.join(problems)}"
                )
        train = tv_class(str(root), train=True, download=download)
        test = tv_class(str(root), train=False, download=download)
        return Split(
            train.data.unsqueeze(1).contiguous(),
            train.targets.long(),
            test.data.unsqueeze(1).contiguous(),
            test.targets.long(),
        )

    return load


DATASETS.register("fashion_mnist")(
    DatasetInfo(
        name="fashion_mnist",
        channels=1,
        image_size=28,
        classes=tuple(FashionMNIST.classes),
        mean=(0.2860,),
        std=(0.3530,),
        load=_idx_loader(FashionMNIST, "run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"),
    )
)


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
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Prepared":
        return cls(
            d["dataset"], tuple(d["classes"]), tuple(d["mean"]), tuple(d["std"]),
            d["train_x"], d["train_y"], d["test_x"], d["test_y"], ZCA.from_dict(d.get("zca")),
        )


def prepare(
    info: DatasetInfo, split: Split, train_limit: int, generator: torch.Generator, zca_reg: float | None = None
) -> Prepared:
    """Cap the train set to ``train_limit`` images, the same number per class (0 = keep all); with a
    ``zca_reg``, fit ZCA whitening on the (capped, normalised) train images."""
    train_x, train_y = split.train_x, split.train_y
    if train_limit:
        pick = stratified_subset(train_y, train_limit // info.num_classes, generator)
        train_x, train_y = train_x[pick], train_y[pick]
    zca = ZCA.fit(normalize(train_x, info.mean, info.std), zca_reg) if zca_reg is not None else None
    return Prepared(info.name, info.classes, info.mean, info.std, train_x, train_y, split.test_x, split.test_y, zca)
