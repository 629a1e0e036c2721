"""What the prepare-data stage writes and every later stage reads: the InD split (uint8) and its input
transform, ``data/prepared/ind.pt`` (the InD datasets themselves are in :mod:`trustdd.data.datasets`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trustdd.artifacts import Artifact
from trustdd.data.images import InputTransform, normalize, stratified_subset
from trustdd.data.whitening import ZCA
from trustdd.options import ParamsError

if TYPE_CHECKING:
    from trustdd.data.datasets import DatasetInfo, Split


@dataclass(frozen=True)
class Prepared(Artifact):
    """``data/prepared/ind.pt``: the InD split (uint8 N x C x H x W, int64 labels) and its input transform
    (per-channel ``mean`` and ``std`` in [0, 1] units, and ``zca`` when ``data.zca`` is true), written by
    prepare_data. Only when they apply: ``verified`` False and ``checksums`` ``{file: md5}`` of md5-checked
    files that were read although their md5 is not the official one (``data.verify`` false), and
    ``skipped`` ``[{file, error}]``, the undecodable image files left out (``imagefolder``)."""

    PATH = Path("data/prepared/ind.pt")

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
