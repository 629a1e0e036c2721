"""The outlier pool, ``data/outliers/pool.pt`` (:class:`OutlierPool`): uint8 images in the InD shape and
the kind of each (the corruption that made it, or ``oe``). :mod:`trustdd.outliers.sources` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trustdd.artifacts import Artifact


@dataclass(frozen=True)
class OutlierPool(Artifact):
    """``data/outliers/pool.pt``, written by prepare_outliers; experts, distillation and the random
    baseline draw their outliers from it."""

    PATH = Path("data/outliers/pool.pt")

    x: torch.Tensor  # uint8 N x C x H x W
    kind: torch.Tensor  # int64 N: index into ``kinds`` (the corruption, or 0 for real outliers)
    kinds: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def empty(cls, shape: tuple[int, int, int], source: str = "none") -> "OutlierPool":
        return cls(torch.empty(0, *shape, dtype=torch.uint8), torch.empty(0, dtype=torch.long), (), source)

    def to_dict(self) -> dict:
        return {"x": self.x, "kind": self.kind, "kinds": list(self.kinds), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "OutlierPool":
        return cls(d["x"], d["kind"], tuple(d["kinds"]), d["source"])
