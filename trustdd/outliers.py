"""The outlier pool that experts, distillation and evaluation draw on, from a registry of sources.

Sources: ``none`` (plain DD, an empty pool), ``poe`` (Pseudo-Outlier Exposure: corrupted InD train
images) and ``oe`` (real auxiliary outliers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from trustdd.corruptions import make_corruption
from trustdd.data import to_uint8
from trustdd.registry import Registry


@dataclass(frozen=True)
class OutlierPool:
    x: torch.Tensor  # uint8 N x C x H x W
    kind: torch.Tensor  # int64 N: index into ``kinds`` (the corruption, or 0 for real outliers)
    kinds: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def empty(cls, shape: tuple[int, int, int], source: str = "none") -> "OutlierPool":
        return cls(torch.empty(0, *shape, dtype=torch.uint8), torch.empty(0, dtype=torch.long), (), source)


@dataclass(frozen=True)
class PoolRequest:
    """What a source needs to build a pool."""

    train_x: torch.Tensor  # uint8 InD train images
    corruptions: tuple[str, ...]
    options: dict
    per_type: int
    generator: torch.Generator


SOURCES: Registry[Callable[[PoolRequest], OutlierPool]] = Registry("outliers.source")


@SOURCES.register("none")
def _none(req: PoolRequest) -> OutlierPool:
    return OutlierPool.empty(tuple(req.train_x.shape[1:]))


@SOURCES.register("poe")
def _poe(req: PoolRequest, chunk: int = 4096) -> OutlierPool:
    """For each corruption type, ``per_type`` seeded random InD train images, corrupted."""
    n_train = req.train_x.shape[0]
    per_type = min(req.per_type, n_train) if req.per_type > 0 else n_train
    xs, kinds = [], []
    for k, name in enumerate(req.corruptions):
        corrupt = make_corruption(name, req.options.get(name))
        pick = torch.randperm(n_train, generator=req.generator)[:per_type]
        for start in range(0, per_type, chunk):
            batch = req.train_x[pick[start : start + chunk]].float() / 255.0
            xs.append(to_uint8(corrupt(batch, req.generator)))
        kinds.append(torch.full((per_type,), k, dtype=torch.long))
    return OutlierPool(torch.cat(xs), torch.cat(kinds), tuple(req.corruptions), "poe")


@SOURCES.register("oe")
def _oe(req: PoolRequest) -> OutlierPool:
    raise NotImplementedError(
        "outliers.source: 'oe' (real auxiliary outliers) is not yet supported; "
        "valid choices today: 'none', 'poe'"
    )


def build_pool(source: str, req: PoolRequest) -> OutlierPool:
    return SOURCES.get(source)(req)
