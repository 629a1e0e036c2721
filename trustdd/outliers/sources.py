"""Where outliers come from, a registry of sources: ``none`` (plain DD, an empty pool), ``poe``
(Pseudo-Outlier Exposure: corrupted InD train images) and ``oe`` (real auxiliary outliers, read by one of
the ``OE_FORMATS``). Each builds an :class:`~trustdd.outliers.pool.OutlierPool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from trustdd.data import image_sources
from trustdd.data.images import to_uint8
from trustdd.options import at_least, invalid, make
from trustdd.outliers.corruptions import CORRUPTIONS
from trustdd.outliers.pool import OutlierPool
from trustdd.registry import Registry


@dataclass(frozen=True)
class OEConfig:
    """Where real outliers come from (``outliers.oe`` in params.yaml)."""

    format: str = "embedded"  # a key of trustdd.outliers.sources.OE_FORMATS
    path: str = ""  # the .npy file, the image folder, or the torchvision root folder
    name: str = ""  # torchvision only: the dataset class, e.g. CIFAR100
    download: bool = False  # torchvision only: may it fetch the files?
    max_images: int = 12000  # seeded random subset (0 = every image; the embedded pool needs a number)

    def check(self) -> None:
        """The rules of a known ``format`` (the params check looks it up in OE_FORMATS first), checked when
        outliers.source is oe; raises ParamsError naming ``outliers.oe.<key>``, the value and what is valid."""
        if self.format != "embedded" and not self.path:
            raise invalid("outliers.oe.path", self.path, f"the path to read for outliers.oe.format {self.format!r}")
        if self.format == "torchvision" and not self.name:
            raise invalid("outliers.oe.name", self.name, "a torchvision.datasets class name, e.g. CIFAR100")
        at_least("outliers.oe.max_images", self.max_images, 1 if self.format == "embedded" else 0)


@dataclass(frozen=True)
class PoolRequest:
    """What a source needs to build a pool."""

    train_x: torch.Tensor  # uint8 InD train images
    corruptions: tuple[str, ...]
    options: dict
    per_type: int
    generator: torch.Generator
    oe: OEConfig = OEConfig()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


SOURCES: Registry[Callable[[PoolRequest], OutlierPool]] = Registry("outliers.source")


@SOURCES.register("none")
def _none(req: PoolRequest) -> OutlierPool:
    return OutlierPool.empty(tuple(req.train_x.shape[1:]))


@SOURCES.register("poe")
def _poe(req: PoolRequest, chunk: int = 4096) -> OutlierPool:
    """For each corruption type, ``per_type`` seeded random InD train images, corrupted ``chunk`` at a time
    (a last chunk of 1 image joins the one before: the mixing corruptions need 2)."""
    n_train = req.train_x.shape[0]
    per_type = min(req.per_type, n_train) if req.per_type > 0 else n_train
    starts = list(range(0, per_type, chunk))
    if len(starts) > 1 and per_type - starts[-1] == 1:
        starts.pop()
    xs, kinds = [], []
    for k, name in enumerate(req.corruptions):
        corrupt = make(CORRUPTIONS, name, req.options.get(name), shape=req.shape)
        pick = torch.randperm(n_train, generator=req.generator)[:per_type]
        for start, end in zip(starts, starts[1:] + [per_type]):
            batch = req.train_x[pick[start:end]].float() / 255.0
            xs.append(to_uint8(corrupt(batch, req.generator)))
        kinds.append(torch.full((per_type,), k, dtype=torch.long))
    return OutlierPool(torch.cat(xs), torch.cat(kinds), tuple(req.corruptions), "poe")


@SOURCES.register("oe")
def _oe(req: PoolRequest) -> OutlierPool:
    """Real outliers, converted to the InD shape: one kind, ``oe``."""
    x = OE_FORMATS.get(req.oe.format)(req)
    return OutlierPool(x, torch.zeros(x.shape[0], dtype=torch.long), ("oe",), "oe")


# Readers of real outlier data; each returns uint8 N x C x H x W in the InD shape and raises
# image_sources.ImageSourceError naming the ``outliers.oe`` key at fault.
OE_FORMATS: Registry[Callable[[PoolRequest], torch.Tensor]] = Registry("outliers.oe.format")


@OE_FORMATS.register("embedded")
def _oe_embedded(req: PoolRequest) -> torch.Tensor:
    """Offline default: crops of photos shipped in scikit-image / scikit-learn that no OOD test set uses."""
    req.oe.check()  # max_images >= 1: the embedded pool needs a number
    return image_sources.embedded_pool(req.oe.max_images, req.shape, req.generator)


@OE_FORMATS.register("npy")
def _oe_npy(req: PoolRequest) -> torch.Tensor:
    """A uint8 N x H x W x C array, e.g. the 300K Random Images file of the Outlier Exposure paper."""
    return image_sources.read_npy(req.oe.path, req.shape, req.oe.max_images, req.generator, "outliers.oe.path")


@OE_FORMATS.register("folder")
def _oe_folder(req: PoolRequest) -> torch.Tensor:
    """Every image file under a folder, any depth; undecodable files are skipped with a warning."""
    return image_sources.read_folder(req.oe.path, req.shape, req.oe.max_images, req.generator, "outliers.oe.path").images


@OE_FORMATS.register("torchvision")
def _oe_torchvision(req: PoolRequest) -> torch.Tensor:
    """A torchvision dataset's train split (labels ignored), read from ``path`` as its root."""
    return image_sources.read_torchvision(
        req.oe.name, req.oe.path, req.oe.download, req.shape, req.oe.max_images, req.generator, "outliers.oe"
    )


def build_pool(source: str, req: PoolRequest) -> OutlierPool:
    return SOURCES.get(source)(req)
