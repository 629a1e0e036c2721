"""In-distribution datasets: one registry entry each, with its shape, normalisation and file source.

Every source reads files already on disk under ``data.root`` and touches the network only when
``data.download`` is true. When files are missing and may not be downloaded, :class:`DataNotFoundError`
lists the exact files or folders expected under the root and how to get them on another machine, before
anything is read. Images come back as uint8 N x C x H x W at the requested size, labels as int64.

- ``mnist``, ``fashion_mnist``: torchvision's IDX readers (Fashion-MNIST also from Debian's package).
- ``svhn``, ``cifar10``, ``cifar100``: torchvision's readers, which check every file's md5.
- ``tiny_imagenet``: the official ``tiny-imagenet-200`` tree, val labels from ``val_annotations.txt``.
- ``imagenette``, ``imagewoof``, ``imagefruit``, ``imageyellow``, ``imagemeow``, ``imagesquawk``: MTT's
  10-class ImageNet subsets, read from an ImageNet ``train``/``val`` tree of class folders, resized so the
  shorter side is the image size and centre-cropped (MTT's Resize + CenterCrop), 128 by default.
- ``imagefolder``, ``npy``: a user's own data (``train/<class>/`` and ``test/<class>/`` image folders, or
  ``x_train.npy``/``y_train.npy``/``x_test.npy``/``y_test.npy``). Their channels, size and classes come
  from the files: :meth:`DatasetInfo.resolve` reads them from metadata only (the class folder names and
  one image file name per class folder; .npy headers and labels), so the params check refuses bad
  files in seconds; the image folders are listed in full once, when the data is prepared
  (:meth:`DatasetInfo.load`), and their mean and std are computed from the train images then.

Files with an official md5 (the MNIST family, SVHN, CIFAR-10/100) are checked before anything is read: a
file that is missing and a file that is present with another md5 are told apart, with both md5s. With
``data.verify: false`` the latter are used anyway, one warning each, and :meth:`DatasetInfo.ensure`
returns the md5s of the files read, which the prepare stage records in ``ind.pt``. Warnings are
``warning: ...`` lines on stderr (:func:`trustdd.data.image_sources.warn`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trustdd.data.image_sources import (
    ImageSourceError,
    Mismatch,
    blocking,
    check_md5s,
    decode_files,
    decode_images,
    file_md5,
    files_headline,
    has_image,
    image_extensions,
    list_images,
    looked_for,
    open_npy,
    read_npy,
    torchvision_files,
    warn,
    warn_skipped,
    warnings_logged,
)
from trustdd.data.images import fit_images
from trustdd.registry import Registry
from trustdd.runtime import tmp_sibling

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor  # uint8 N x C x H x W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = ()
    checksums: dict[str, str] | None = None  # data.verify false: {file: md5} of the md5-checked files read
    skipped: tuple[tuple[str, str], ...] = ()  # (file, error) of undecodable image files left out (imagefolder)


class DataNotFoundError(FileNotFoundError):
    """Raw files are missing and may not be downloaded; the message lists what was expected where."""


class InvalidDataError(DataNotFoundError):
    """The files are there but are not what the dataset needs (not the official md5, a wrong layout, shape,
    dtype or labels); a DataNotFoundError, so every stage reports it as one message and exits 2."""


class Source:
    """Where a dataset's files live under the root, how to read one split, and how to fetch them."""

    hint = ""  # how to get the files on a machine with network
    from_files = False  # True: channels, size and classes come from the files (see DatasetInfo.resolve)
    downloadable = True  # False: the files are the user's own; data.download cannot help

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        """What is missing or wrong under ``root`` (empty when the files are ready to read): strings for
        missing files, :class:`Mismatch` for files present with another md5 than the official one. With
        ``verify`` false, such files are still listed but made ready to read (e.g. unpacked)."""
        return [f"missing: {p}" for p in self.expected(root) if not p.exists()]

    def checked(self, root: Path) -> list[Path]:
        """The files whose md5 is checked and that are read (recorded when data.verify is false)."""
        return []

    def check_image_size(self, image_size: int) -> None:
        """ValueError naming ``data.image_size`` when the dataset cannot take it, whatever the files."""

    def resolve(self, info: "DatasetInfo", root: Path, image_size: int) -> "DatasetInfo":
        """``info`` for the files under ``root`` (only for ``from_files`` sources)."""
        return info

    def expected(self, root: Path) -> list[Path]:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        """Download into ``root`` (only called when ``data.download`` is true)."""
        raise DataNotFoundError(f"the files cannot be downloaded automatically: {self.hint}")

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One split -> (uint8 N x C x size x size, int64 labels)."""
        raise NotImplementedError

    def read_splits(self, root: Path, size: int) -> tuple[tuple, tuple, tuple[str, ...], list[tuple[Path, str]]]:
        """Both splits at once: ((train_x, train_y), (test_x, test_y), the classes, and the (file, error)
        of the image files left out because they do not decode, each split warned about with a
        :class:`~trustdd.data.image_sources.SkippedImagesWarning`)."""
        return self.read(root, True, size), self.read(root, False, size), self.classes(root), []

    def classes(self, root: Path) -> tuple[str, ...]:
        return ()

    def train_count(self, root: Path) -> int | None:
        """How many train images the files under ``root`` hold, from their headers, array shapes or file
        lists, without decoding an image file (a smoke run extrapolates with it); None when that would need a
        full read, or the files are not there."""
        return None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: int  # the native (or, for the ImageNet subsets, MTT's default) side length
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: Source = field(repr=False, compare=False)

    def shape(self, image_size: int = 0) -> tuple[int, int, int]:
        """C x H x W at ``image_size`` (0 = the dataset's default)."""
        side = image_size or self.image_size
        return (self.channels, side, side)

    def ensure(self, root: Path, download: bool, verify: bool = True) -> dict[str, str] | None:
        """Make sure the files are under ``root`` (downloading when allowed), else DataNotFoundError (or
        InvalidDataError for files present with another md5). With ``verify`` false, a file whose md5 is
        not the official one is used anyway, with a warning, and the md5s of the checked files are
        returned ({file: md5}); None with ``verify`` true, or when the dataset has no md5-checked file."""
        problems = self.source.problems(root, verify)
        if blocking(problems, verify) and download:
            self.source.fetch(root)
            problems = self.source.problems(root, verify)
        if blocking(problems, verify):
            raise self.files_error(root, download, blocking(problems, verify))
        if verify:
            return None
        for p in problems:
            warn(f"dataset {self.name!r}: data.verify is false, so a file that is not the official one is used: {p}")
        return {str(p): file_md5(p) for p in self.source.checked(root)} or None

    def files_error(self, root: Path, download: bool, problems: list[str | Mismatch]) -> DataNotFoundError:
        """The error for ``problems``, with a headline that is true for the case: files missing (each
        expected file is listed), present but not the official ones (each with both md5s), or both."""
        missing = [p for p in problems if not isinstance(p, Mismatch)]
        differs = [p for p in problems if isinstance(p, Mismatch)]
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        problem_lines = "\n".join(f"  {p}" for p in problems[:12]) + more
        where = f"data.root {str(root)!r}"
        if self.source.downloadable:
            offline = " and data.download is false" if not download else " and the download did not provide them"
        else:
            offline = ""
        get = f"To get them: {self.source.hint}. Set data.root (or the environment variable TRUSTDD_DATA_ROOT) to the folder that holds them"
        get += ", or set data.download: true on a machine with network." if self.source.downloadable else "."
        replace = (
            "To use the files whose md5 differs as they are, set data.verify: false (each is then warned "
            "about, and the md5s of the files read are recorded in data/prepared/ind.pt); otherwise replace "
            + ("them with the official files, as above." if missing else f"them with the official files: {self.source.hint}.")
        )
        if not differs:
            expected = self.source.expected(root)
            listed = "\n".join(f"  {p}" for p in expected)
            if problems != [f"missing: {p}" for p in expected]:  # not simply all missing: say what is wrong
                listed += "\nProblems:\n" + problem_lines
            return DataNotFoundError(
                f"dataset {self.name!r}: files not found under {where}{offline}.\nExpected:\n{listed}\n{get}"
            )
        if not missing:
            return InvalidDataError(
                f"dataset {self.name!r}: {files_headline(0, len(differs))} under {where} (data.verify is "
                f"true):\n{problem_lines}\n{replace}"
            )
        return InvalidDataError(
            f"dataset {self.name!r}: {files_headline(len(missing), len(differs))} under {where}{offline}:\n"
            f"{problem_lines}\n{get}\n{replace}"
        )

    @property
    def resolved(self) -> bool:
        """Whether this entry's channels, size and classes are known (always, but for a user's own data
        before :meth:`resolve`)."""
        return not self.source.from_files or self.num_classes > 0

    def resolve(self, root: Path, image_size: int = 0) -> "DatasetInfo":
        """This entry for the files under ``root`` at ``image_size``: itself for the datasets with fixed
        constants. For a user's own data (``imagefolder``, ``npy``), the channels, size and number of
        classes are read from the files' metadata (no image is decoded, no folder listed in full), and
        mean and std are left empty (``trustdd.data.prepared.prepare`` computes them from the train images);
        missing or invalid files raise DataNotFoundError / InvalidDataError naming the file and the key,
        an invalid ``image_size`` a ValueError (a params mistake, not a file problem)."""
        if not self.source.from_files:
            return self
        root = Path(root)
        self.source.check_image_size(image_size)
        problems = self.source.problems(root)
        if problems:
            raise self.files_error(root, False, problems)
        return self.source.resolve(self, root, image_size)

    def load(self, root: Path, download: bool, image_size: int = 0, verify: bool = True) -> Split:
        """Both splits at ``image_size`` (0 = the entry's). A user's own data is resolved first unless
        this entry already is (``Params.dataset_info``); its image folders are listed once, here, and
        its undecodable files are left out with a ``warning:`` line each split and listed in the Split."""
        root = Path(root)
        checksums = self.ensure(root, download, verify)
        info = self if self.resolved else self.resolve(root, image_size)
        size = image_size or info.image_size
        with warnings_logged():  # undecodable image files: a warning: line each split, as for OOD folders
            (train_x, train_y), (test_x, test_y), classes, skipped = self.source.read_splits(root, size)
        for split, y in (("train", train_y), ("test", test_y)):
            if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < info.num_classes:
                raise DataNotFoundError(
                    f"dataset {self.name!r}: {split} labels span {int(y.min())}..{int(y.max())}, outside the "
                    f"{info.num_classes} classes of this dataset; the files under {str(root)!r} are not {self.name}"
                )
        skipped = tuple((str(f), err) for f, err in skipped)
        return Split(train_x, train_y, test_x, test_y, classes, checksums, skipped)

    def load_test(
        self, root: Path, download: bool, shape: tuple[int, int, int], verify: bool = True
    ) -> torch.Tensor:
        """The test images only, fitted to ``shape`` (another dataset's), e.g. to serve as an OOD set."""
        root = Path(root)
        self.ensure(root, download, verify)
        x, _ = self.source.read(root, False, shape[-1])
        return fit_images(x, shape)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size and x.shape[-2] == size else fit_images(x, (x.shape[1], size, size))


def torchvision_dataset(name: str) -> type:
    """torchvision's dataset class ``name`` (``"CIFAR10"``). Imported where a dataset is read, not with this
    module: importing torchvision takes about 3 s (its models pull in torch._dynamo), which the stages that
    never read a dataset file (the params check, the experts, the distillation, evaluation) need not pay."""
    import torchvision.datasets

    return getattr(torchvision.datasets, name)


def _without_md5(tv_class: type) -> type:
    """``tv_class`` with its md5s removed, so that it only reads: :meth:`DatasetInfo.ensure` has already
    checked them (or, with data.verify false, accepted other files), and a second md5 pass over the
    files would only cost time."""
    attrs: dict = {}
    for name in ("train_list", "test_list"):
        if hasattr(tv_class, name):
            attrs[name] = [[f, None] for f, _ in getattr(tv_class, name)]
    if isinstance(getattr(tv_class, "meta", None), dict):
        attrs["meta"] = {**tv_class.meta, "md5": None}
    if isinstance(getattr(tv_class, "split_list", None), dict):
        attrs["split_list"] = {k: [url, f, None] for k, (url, f, _) in tv_class.split_list.items()}
    return type(tv_class.__name__, (tv_class,), attrs)


# ---------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files in ROOT/<Class>/raw/ (Fashion-MNIST also from Debian's package)
# ---------------------------------------------------------------------------------------------------

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# md5 of the UNPACKED IDX files: the same whether the .gz came from the original site or from Debian's
# package (which recompresses them, so the .gz md5s that torchvision checks differ). Where a dataset has
# no entry, each .gz is checked against torchvision's md5 before it is unpacked.
IDX_MD5 = {
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


class IdxSource(Source):
    """torchvision's MNIST-family reader. The ``.gz`` files are looked for in ``ROOT/<Class>/raw`` and
    in ``search_dirs``, verified, and unpacked into the raw folder, without any network."""

    def __init__(self, tv_name: str, search_dirs: list[Path], hint: str) -> None:
        self.tv_name = tv_name  # torchvision.datasets.<tv_name>, imported when first needed
        self.search_dirs = search_dirs
        self.hint = hint

    @property
    def tv_class(self) -> type:
        return torchvision_dataset(self.tv_name)

    def raw(self, root: Path) -> Path:
        return root / self.tv_name / "raw"

    def expected(self, root: Path) -> list[Path]:
        return [self.raw(root) / filename for filename, _ in self.tv_class.resources]

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        unpacked_md5 = IDX_MD5.get(self.tv_name, {})
        problems: list[str | Mismatch] = []
        for filename, gz_md5 in self.tv_class.resources:
            name = filename.removesuffix(".gz")
            unpacked = self.raw(root) / name
            want = unpacked_md5.get(name)
            differs: list[Mismatch] = []  # the copies found that are not the official file
            if unpacked.exists():
                if want is None:
                    continue
                actual = file_md5(unpacked)
                if actual == want:
                    continue
                differs.append(Mismatch(unpacked, want, actual, source="the expected"))
                if not verify:  # used as it is
                    problems += differs
                    continue
            for candidate in [self.raw(root) / filename] + [d / filename for d in self.search_dirs]:
                if not candidate.exists():
                    continue
                if want is None:
                    actual = file_md5(candidate)
                    if actual != gz_md5:
                        differs.append(Mismatch(candidate, gz_md5, actual))
                        if verify:
                            continue
                actual = self._unpack(candidate, unpacked, want if verify else None)
                if want is not None and actual != want:
                    differs.append(Mismatch(candidate, want, actual, what="content md5", source="the expected"))
                    if verify:
                        continue
                if not verify:  # unpacked although not the official file
                    problems += differs
                break
            else:
                problems += differs or [
                    f"{name}: no copy found (looked in {self.raw(root)}"
                    + "".join(f", {d}" for d in self.search_dirs)
                    + ")"
                ]
        return problems

    def checked(self, root: Path) -> list[Path]:
        return [f for f, _ in torchvision_files(self.tv_class, root)]  # the unpacked files

    @staticmethod
    def _unpack(gz: Path, unpacked: Path, md5: str | None) -> str:
        """Unpack ``gz`` to ``unpacked`` if its content's md5 is ``md5`` (or ``md5`` is None); returns
        the content's md5."""
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_sibling(unpacked)  # this process's own: experiments run in parallel may unpack the same file
        h = hashlib.md5()
        with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(1 << 20), b""):
                h.update(block)
                fout.write(block)
        actual = h.hexdigest()
        if md5 is None or actual == md5:
            tmp.replace(unpacked)
        else:
            tmp.unlink()
        return actual

    def fetch(self, root: Path) -> None:
        self.tv_class(str(root), train=True, download=True)
        self.tv_class(str(root), train=False, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.tv_class(str(root), train=train, download=False)
        return _resized(ds.data.unsqueeze(1).contiguous(), size), ds.targets.long()

    def classes(self, root: Path) -> tuple[str, ...]:
        return tuple(self.tv_class.classes)

    def train_count(self, root: Path) -> int | None:
        images = self.raw(root) / "train-images-idx3-ubyte"  # header: magic, then the count (big-endian)
        return int.from_bytes(images.read_bytes()[4:8], "big") if images.exists() else None


# ---------------------------------------------------------------------------------------------------
# SVHN, CIFAR-10, CIFAR-100: torchvision's readers, which verify every file's md5
# ---------------------------------------------------------------------------------------------------


class CifarSource(Source):
    """``ROOT/cifar-10-batches-py/`` or ``ROOT/cifar-100-python/``, as torchvision extracts them."""

    def __init__(self, tv_name: str, url: str) -> None:
        self.tv_name = tv_name  # torchvision.datasets.<tv_name>, imported when first needed
        self.url = url  # torchvision's <tv_name>.url (a test checks that they agree)
        self.hint = (
            f"download {url} and extract it into data.root "
            f"(or run torchvision.datasets.{tv_name}(root, download=True) on a machine with network)"
        )

    @property
    def tv_class(self) -> type:
        return torchvision_dataset(self.tv_name)

    def expected(self, root: Path) -> list[Path]:
        return [f for f, _ in torchvision_files(self.tv_class, root)]

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        """Missing files, then the present ones whose md5 differs (missing ones are reported once)."""
        return super().problems(root) + check_md5s(torchvision_files(self.tv_class, root))[1]

    def checked(self, root: Path) -> list[Path]:
        return self.expected(root)

    def fetch(self, root: Path) -> None:
        self.tv_class(str(root), train=True, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = _without_md5(self.tv_class)(str(root), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # N x 32 x 32 x 3 -> N x 3 x 32 x 32
        return _resized(x, size), torch.tensor(ds.targets, dtype=torch.long)

    def classes(self, root: Path) -> tuple[str, ...]:
        with open(root / self.tv_class.base_folder / self.tv_class.meta["filename"], "rb") as f:
            return tuple(pickle.load(f, encoding="latin1")[self.tv_class.meta["key"]])

    def train_count(self, root: Path) -> int | None:
        total = 0
        for name, _ in self.tv_class.train_list:
            with open(root / self.tv_class.base_folder / name, "rb") as f:
                total += len(pickle.load(f, encoding="latin1")["data"])
        return total


class SvhnSource(Source):
    """``ROOT/train_32x32.mat`` and ``ROOT/test_32x32.mat`` (torchvision's layout). Digit 0 is label 0."""

    hint = (
        "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into "
        "data.root (or run torchvision.datasets.SVHN(root, split=..., download=True) on a machine with network)"
    )

    def expected(self, root: Path) -> list[Path]:
        return [f for f, _ in torchvision_files(torchvision_dataset("SVHN"), root, SPLITS)]

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        """Missing files, then the present ones whose md5 differs (missing ones are reported once)."""
        return super().problems(root) + check_md5s(torchvision_files(torchvision_dataset("SVHN"), root, SPLITS))[1]

    def checked(self, root: Path) -> list[Path]:
        return self.expected(root)

    def fetch(self, root: Path) -> None:
        for s in ("train", "test"):
            torchvision_dataset("SVHN")(str(root), split=s, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = _without_md5(torchvision_dataset("SVHN"))(str(root), split="train" if train else "test", download=False)
        return _resized(torch.from_numpy(ds.data).contiguous(), size), torch.from_numpy(ds.labels).long()

    def classes(self, root: Path) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))

    def train_count(self, root: Path) -> int | None:
        from scipy.io import whosmat  # the shapes of the .mat file's arrays, without loading them

        shapes = {name: shape for name, shape, _ in whosmat(root / "train_32x32.mat")}
        return int(shapes["X"][-1]) if "X" in shapes else None


# ---------------------------------------------------------------------------------------------------
# Tiny-ImageNet: the official tiny-imagenet-200 tree
# ---------------------------------------------------------------------------------------------------


class TinyImageNetSource(Source):
    """``ROOT/tiny-imagenet-200/``: ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG``
    labelled by ``val/val_annotations.txt``; ``words.txt`` (optional) names the classes. Classes are in
    sorted wnid order (torchvision's ImageFolder order, as MTT uses); the val set is the test set."""

    folder = "tiny-imagenet-200"
    url = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    md5 = "90528d7ca1a48142e341f4ef8d21d0de"
    hint = f"download {url} and unzip it into data.root"

    def expected(self, root: Path) -> list[Path]:
        base = root / self.folder
        return [base / "wnids.txt", base / "train", base / "val" / "images", base / "val" / "val_annotations.txt"]

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        problems = super().problems(root)
        if problems:
            return problems
        train = root / self.folder / "train"
        return [f"missing: {train / w / 'images'}" for w in self.wnids(root) if not (train / w / "images").is_dir()]

    def fetch(self, root: Path) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(self.url, str(root), md5=self.md5)

    def wnids(self, root: Path) -> list[str]:
        lines = (root / self.folder / "wnids.txt").read_text().split()
        return sorted(set(lines))

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        base = root / self.folder
        index = {w: i for i, w in enumerate(self.wnids(root))}
        files, labels = [], []
        if train:
            for w, i in index.items():
                found = sorted(f for f in (base / "train" / w / "images").iterdir() if f.is_file())
                files += found
                labels += [i] * len(found)
        else:
            for n, line in enumerate((base / "val" / "val_annotations.txt").read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < 2 or parts[1] not in index:
                    raise DataNotFoundError(
                        f"{base / 'val' / 'val_annotations.txt'} line {n}: expected '<file>\\t<wnid>\\t...' with a "
                        f"wnid from wnids.txt, got {line!r}"
                    )
                files.append(base / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
        x = decode_files(files, (3, size, size), f"dataset tiny_imagenet ({'train' if train else 'val'})")
        return x, torch.tensor(labels, dtype=torch.long)

    def classes(self, root: Path) -> tuple[str, ...]:
        words_file = root / self.folder / "words.txt"
        words = {}
        if words_file.exists():
            for line in words_file.read_text().splitlines():
                wnid, _, name = line.partition("\t")
                words[wnid] = name.split(",")[0].strip()
        return tuple(words.get(w, w) for w in self.wnids(root))

    def train_count(self, root: Path) -> int | None:
        train = root / self.folder / "train"
        return sum(sum(f.is_file() for f in (train / w / "images").iterdir()) for w in self.wnids(root))


# ---------------------------------------------------------------------------------------------------
# MTT's 10-class ImageNet subsets, from an ImageNet train/val tree of class folders
# ---------------------------------------------------------------------------------------------------


class ImageNetSubsetSource(Source):
    """``ROOT/imagenet/{train,val}/<wnid>/`` for each of the subset's classes; label c is the c-th wnid of
    the subset, in MTT's order. Other class folders may be there and are ignored."""

    folder = "imagenet"
    hint = (
        "get ImageNet-1k from https://image-net.org (login needed) with its val images sorted into one "
        "folder per wnid, as torchvision.datasets.ImageNet lays them out, under data.root/imagenet/; "
        "fast.ai's imagenette2 and imagewoof2 archives have this layout for their 10 classes"
    )

    def __init__(self, wnids: tuple[str, ...], names: tuple[str, ...]) -> None:
        self.wnids, self.names = wnids, names

    def expected(self, root: Path) -> list[Path]:
        return [root / self.folder / split / w for split in ("train", "val") for w in self.wnids]

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "val"
        files, labels = [], []
        for c, w in enumerate(self.wnids):
            found = sorted(f for f in (root / self.folder / split / w).rglob("*") if f.is_file())
            if not found:
                raise DataNotFoundError(f"{root / self.folder / split / w} holds no image files")
            files += found
            labels += [c] * len(found)
        return decode_files(files, (3, size, size), f"dataset ({split} {root / self.folder})"), torch.tensor(labels)

    def classes(self, root: Path) -> tuple[str, ...]:
        return self.names

    def train_count(self, root: Path) -> int | None:
        folders = [root / self.folder / "train" / w for w in self.wnids]
        if not all(f.is_dir() for f in folders):
            return None
        return sum(sum(f.is_file() for f in folder.rglob("*")) for folder in folders)


# ImageNet-1k wnids and names of the subsets that MTT (utils.Config) defines by class index, in its order.
IMAGENET_SUBSETS: dict[str, tuple[tuple[str, str], ...]] = {
    "imagenette": (
        ("n01440764", "tench"),
        ("n02102040", "English springer"),
        ("n02979186", "cassette player"),
        ("n03000684", "chain saw"),
        ("n03028079", "church"),
        ("n03394916", "French horn"),
        ("n03417042", "garbage truck"),
        ("n03425413", "gas pump"),
        ("n03445777", "golf ball"),
        ("n03888257", "parachute"),
    ),
    "imagewoof": (
        ("n02096294", "Australian terrier"),
        ("n02093754", "Border terrier"),
        ("n02111889", "Samoyed"),
        ("n02088364", "beagle"),
        ("n02086240", "Shih-Tzu"),
        ("n02089973", "English foxhound"),
        ("n02087394", "Rhodesian ridgeback"),
        ("n02115641", "dingo"),
        ("n02099601", "golden retriever"),
        ("n02105641", "Old English sheepdog"),
    ),
    "imagefruit": (
        ("n07753275", "pineapple"),
        ("n07753592", "banana"),
        ("n07745940", "strawberry"),
        ("n07747607", "orange"),
        ("n07749582", "lemon"),
        ("n07768694", "pomegranate"),
        ("n07753113", "fig"),
        ("n07720875", "bell pepper"),
        ("n07718472", "cucumber"),
        ("n07742313", "Granny Smith"),
    ),
    "imageyellow": (
        ("n02206856", "bee"),
        ("n12057211", "yellow lady's slipper"),
        ("n07753592", "banana"),
        ("n07749582", "lemon"),
        ("n12144580", "corn"),
        ("n04146614", "school bus"),
        ("n03530642", "honeycomb"),
        ("n02129165", "lion"),
        ("n01773157", "black and gold garden spider"),
        ("n01531178", "goldfinch"),
    ),
    "imagemeow": (
        ("n02123045", "tabby"),
        ("n02123159", "tiger cat"),
        ("n02123394", "Persian cat"),
        ("n02123597", "Siamese cat"),
        ("n02124075", "Egyptian cat"),
        ("n02129165", "lion"),
        ("n02129604", "tiger"),
        ("n02128925", "jaguar"),
        ("n02128757", "snow leopard"),
        ("n02127052", "lynx"),
    ),
    "imagesquawk": (
        ("n01806143", "peacock"),
        ("n02007558", "flamingo"),
        ("n01818515", "macaw"),
        ("n02051845", "pelican"),
        ("n02056570", "king penguin"),
        ("n01614925", "bald eagle"),
        ("n01843383", "toucan"),
        ("n01518878", "ostrich"),
        ("n01860187", "black swan"),
        ("n01819313", "sulphur-crested cockatoo"),
    ),
}

# ---------------------------------------------------------------------------------------------------
# A user's own data: an image-folder tree, or .npy arrays
# ---------------------------------------------------------------------------------------------------

class ImageFolderSource(Source):
    """``ROOT/train/<class>/`` and ``ROOT/test/<class>/``: image files at any depth of each class folder,
    of any size and mode. Classes are the train folders in sorted order (hidden folders, starting with
    ``.``, are ignored); the test split must have the same class folders, and every class images in both.
    Images are read as RGB (grayscale, palette and RGBA files converted; alpha dropped), resized so the
    shorter side is ``data.image_size`` (which must be set) and centre-cropped, as the ImageNet subsets.
    Files that do not decode are left out and reported, as for OOD image folders: a
    :class:`~trustdd.data.image_sources.SkippedImagesWarning` per split, and the Split's ``skipped``.

    :meth:`resolve` (the params check, at every stage start) lists only ``train/`` and ``test/`` and
    each class folder up to its first image file; :meth:`read_splits` lists every folder once."""

    from_files = True
    downloadable = False
    hint = (
        "put your images under data.root as train/<class>/<image files> and test/<class>/<image files>, "
        "with the same class folders in both"
    )
    channels = 3

    def expected(self, root: Path) -> list[Path]:
        return [root / s for s in SPLITS]

    def problems(self, root: Path, verify: bool = True) -> list[str | Mismatch]:
        return [f"missing: {p} (a folder of class folders)" for p in self.expected(root) if not p.is_dir()]

    def layout(self, root: Path) -> tuple[str, ...]:
        """The classes (train's class folder names, sorted), once ``train/`` and ``test/`` are known to
        hold class folders only, and the same ones."""
        exts = image_extensions()
        names: dict[str, list[str]] = {}
        for split in SPLITS:
            base = root / split
            with os.scandir(base) as it:
                entries = list(it)
            loose = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in exts and e.is_file())
            if loose:
                raise InvalidDataError(
                    f"dataset 'imagefolder': data.root: {base} holds {len(loose)} image file(s) outside class "
                    f"folders (e.g. {loose[0]}); expected {base}/<class>/<image files>"
                )
            names[split] = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
            if not names[split]:
                raise InvalidDataError(
                    f"dataset 'imagefolder': data.root: {base} has no class folders; expected {base}/<class>/<image files>"
                )
        train, test = names["train"], names["test"]
        only_test = sorted(set(test) - set(train))
        if only_test:
            raise InvalidDataError(
                f"dataset 'imagefolder': data.root: class folder(s) {', '.join(only_test)} of {root / 'test'} "
                f"are not in {root / 'train'}; the classes are the folders of train/, and the test split must have the same"
            )
        only_train = sorted(set(train) - set(test))
        if only_train:
            raise InvalidDataError(
                f"dataset 'imagefolder': data.root: class folder(s) {', '.join(only_train)} of {root / 'train'} "
                f"are missing from {root / 'test'}; every class needs test images too"
            )
        return tuple(train)

    @staticmethod
    def refuse_empty(root: Path, split: str, empty: list[str]) -> None:
        if empty:
            raise InvalidDataError(
                f"dataset 'imagefolder': data.root: class(es) {', '.join(empty)} have no image files in "
                f"{root / split} (e.g. {root / split / empty[0]}; {looked_for()}); every class needs "
                f"{split} images"
            )

    def check_image_size(self, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(
                f"data.image_size: invalid value {image_size}; expected the side (> 0) that every image of "
                "dataset 'imagefolder' is resized to, e.g. 64: the images of a folder have any size"
            )

    def resolve(self, info: "DatasetInfo", root: Path, image_size: int) -> "DatasetInfo":
        classes = self.layout(root)
        for split in SPLITS:
            self.refuse_empty(root, split, [c for c in classes if not has_image(root / split / c)])
        return dataclasses.replace(info, channels=self.channels, image_size=image_size, num_classes=len(classes))

    def read_splits(self, root: Path, size: int) -> tuple[tuple, tuple, tuple[str, ...], list[tuple[Path, str]]]:
        classes = self.layout(root)
        out, skipped = [], []
        for split in SPLITS:
            found = {c: list_images(root / split / c) for c in classes}
            self.refuse_empty(root, split, [c for c in classes if not found[c]])
            paths = [f for c in classes for f in found[c]]
            labels = torch.tensor([i for i, c in enumerate(classes) for _ in found[c]], dtype=torch.long)
            x, kept, failed = decode_images(paths, (self.channels, size, size))
            y = labels[torch.tensor(kept, dtype=torch.long)]
            warn_skipped(f"dataset 'imagefolder' ({split})", root / split, failed, len(paths))
            counts = torch.bincount(y, minlength=len(classes))
            empty = [classes[c] for c in range(len(classes)) if counts[c] == 0]
            if empty:
                raise InvalidDataError(
                    f"dataset 'imagefolder': data.root: class(es) {', '.join(empty)} have no image in {root / split} "
                    f"that decodes (e.g. {root / split / empty[0]}); every class needs {split} images"
                )
            out.append((x, y))
            skipped += failed
        return out[0], out[1], classes, skipped


class NpySource(Source):
    """``ROOT/x_train.npy``, ``ROOT/y_train.npy``, ``ROOT/x_test.npy``, ``ROOT/y_test.npy``: images as uint8
    N x H x W x C (C = 1 or 3, as for OOD and OE .npy files) and 1-D integer labels 0..K-1, K being the
    largest train label + 1; every class must have train and test images. Both splits must have the same
    channels; with ``data.image_size`` 0 the images must be square and of one size in both splits, else
    they are resized (plain antialiased resize, as OOD .npy files) to ``data.image_size``."""

    from_files = True
    downloadable = False
    names = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy")
    hint = (
        "save your arrays under data.root as x_train.npy and x_test.npy (uint8 N x H x W x C, C 1 or 3) "
        "and y_train.npy and y_test.npy (integer class labels 0..K-1, one per image)"
    )

    def expected(self, root: Path) -> list[Path]:
        return [root / n for n in self.names]

    @staticmethod
    def images(path: Path) -> np.ndarray:
        try:
            return open_npy(path, "data.root")
        except ImageSourceError as err:
            raise InvalidDataError(f"dataset 'npy': {err}") from None

    @staticmethod
    def labels(path: Path) -> np.ndarray:
        """A 1-D array of non-negative integer labels, as int64."""
        expected = "expected a 1-D array of integer class labels 0..K-1, one per image"
        try:
            y = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise InvalidDataError(f"dataset 'npy': data.root: {str(path)!r} is not a valid .npy file ({e}); {expected}") from None
        if not isinstance(y, np.ndarray):
            raise InvalidDataError(f"dataset 'npy': data.root: {str(path)!r} is not a .npy array but a {type(y).__name__}; {expected}")
        if y.dtype.kind not in "iu":
            raise InvalidDataError(f"dataset 'npy': data.root: {str(path)!r} has dtype {y.dtype}; {expected} (e.g. int64)")
        if y.ndim != 1:
            hint = " (save y.ravel())" if y.ndim == 2 and 1 in y.shape else ""
            raise InvalidDataError(f"dataset 'npy': data.root: {str(path)!r} has shape {tuple(y.shape)}; {expected}{hint}")
        if y.size == 0:
            raise InvalidDataError(f"dataset 'npy': data.root: {str(path)!r} holds no labels; {expected}")
        y = np.asarray(y)
        if y.dtype.kind == "i" and int(y.min()) < 0:
            i = int(np.argmax(y < 0))
            raise InvalidDataError(
                f"dataset 'npy': data.root: {str(path)!r} has the negative label {int(y[i])} (at index {i}); {expected}"
            )
        return y.astype(np.int64)

    def arrays(self, root: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
        """({split: (memory-mapped images, labels)}, number of classes), every rule checked."""
        out = {}
        for split in SPLITS:
            xp, yp = root / f"x_{split}.npy", root / f"y_{split}.npy"
            x, y = self.images(xp), self.labels(yp)
            if x.shape[0] != y.shape[0]:
                raise InvalidDataError(
                    f"dataset 'npy': data.root: {xp} holds {x.shape[0]} images but {yp} {y.shape[0]} labels; "
                    "expected one label per image"
                )
            out[split] = (x, y)
        (x_train, y_train), (x_test, y_test) = out["train"], out["test"]
        if x_train.shape[3] != x_test.shape[3]:
            raise InvalidDataError(
                f"dataset 'npy': data.root: {root / 'x_train.npy'} has {x_train.shape[3]} channel(s) but "
                f"{root / 'x_test.npy'} {x_test.shape[3]}; expected the same in both"
            )
        k = int(y_train.max()) + 1
        present = np.unique(y_train)
        if present.size != k:
            gaps = np.setdiff1d(np.arange(min(k, 10**6)), present)[:5].tolist()
            raise InvalidDataError(
                f"dataset 'npy': data.root: {root / 'y_train.npy'} has no images of class(es) "
                f"{', '.join(map(str, gaps))}{', ...' if k - present.size > len(gaps) else ''}; the classes are "
                f"0..{k - 1} (the largest train label + 1), and every class needs train images"
            )
        if int(y_test.max()) >= k:
            raise InvalidDataError(
                f"dataset 'npy': data.root: {root / 'y_test.npy'} has the label {int(y_test.max())}, a class "
                f"with no train images ({root / 'y_train.npy'} has labels 0..{k - 1})"
            )
        gaps = np.setdiff1d(np.arange(k), np.unique(y_test))[:5].tolist()
        if gaps:
            raise InvalidDataError(
                f"dataset 'npy': data.root: {root / 'y_test.npy'} has no images of class(es) "
                f"{', '.join(map(str, gaps))}; every class needs test images too"
            )
        return out, k

    def resolve(self, info: "DatasetInfo", root: Path, image_size: int) -> "DatasetInfo":
        arrays, k = self.arrays(root)
        (x_train, _), (x_test, _) = arrays["train"], arrays["test"]
        h, w = x_train.shape[1:3]
        if image_size == 0 and (h != w or x_test.shape[1:3] != (h, w)):
            raise InvalidDataError(
                f"dataset 'npy': data.image_size: invalid value 0 (keep the arrays' size), but the images are "
                f"{h} x {w} in {root / 'x_train.npy'} and {x_test.shape[1]} x {x_test.shape[2]} in "
                f"{root / 'x_test.npy'}; expected square images of one size, or a side > 0 to resize them to"
            )
        return dataclasses.replace(info, channels=int(x_train.shape[3]), image_size=image_size or h, num_classes=k)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        channels = self.images(root / f"x_{split}.npy").shape[3]
        x = read_npy(root / f"x_{split}.npy", (channels, size, size), 0, torch.Generator(), "data.root")
        return x, torch.from_numpy(self.labels(root / f"y_{split}.npy"))

    def classes(self, root: Path) -> tuple[str, ...]:
        return tuple(str(c) for c in range(int(self.labels(root / "y_train.npy").max()) + 1))

    def train_count(self, root: Path) -> int | None:
        return int(self.images(root / "x_train.npy").shape[0])


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _register(info: DatasetInfo) -> None:
    DATASETS.register(info.name)(info)


_register(
    DatasetInfo(
        "mnist",
        1,
        28,
        10,
        (0.1307,),
        (0.3081,),
        IdxSource(
            "MNIST",
            [],
            "run torchvision.datasets.MNIST(root, download=True) on a machine with network and copy "
            "ROOT/MNIST/raw/ over",
        ),
    )
)
_register(
    DatasetInfo(
        "fashion_mnist",
        1,
        28,
        10,
        (0.2860,),
        (0.3530,),
        IdxSource(
            "FashionMNIST",
            [DEBIAN_FASHION_MNIST],
            "run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or copy the four .gz files into "
            "ROOT/FashionMNIST/raw/",
        ),
    )
)
_register(DatasetInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), SvhnSource()))
_CIFAR = "https://www.cs.toronto.edu/~kriz/cifar-{}-python.tar.gz"
_register(
    DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), CifarSource("CIFAR10", _CIFAR.format(10)))
)
_register(
    DatasetInfo(
        "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), CifarSource("CIFAR100", _CIFAR.format(100))
    )
)
_register(DatasetInfo("tiny_imagenet", 3, 64, 200, IMAGENET_MEAN, IMAGENET_STD, TinyImageNetSource()))
for _name, _classes in IMAGENET_SUBSETS.items():
    _wnids, _names = zip(*_classes)
    _register(DatasetInfo(_name, 3, 128, 10, IMAGENET_MEAN, IMAGENET_STD, ImageNetSubsetSource(_wnids, _names)))
# A user's own data: channels, size and classes from the files (DatasetInfo.resolve), mean and std from
# the train images (trustdd.data.prepared.prepare).
_register(DatasetInfo("imagefolder", 3, 0, 0, (), (), ImageFolderSource()))
_register(DatasetInfo("npy", 0, 0, 0, (), (), NpySource()))
