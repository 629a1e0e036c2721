"""The outlier pool, ``data/outliers/pool.pt`` (:class:`OutlierPool`): uint8 images in the InD shape and
the kind of each (the corruption that made it, or ``oe``). :mod:`trustdd.outliers.sources` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trustdd.artifacts import Artifact
from trustdd.options import at_least, invalid


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
