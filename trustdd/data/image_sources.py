"""Read a user's images from disk (or an embedded offline pool) into uint8 tensors of the InD shape.

Every reader returns uint8 N x C x H x W with ``(C, H, W) == shape``, the in-distribution shape. Images
come back in source order (file order, array order or dataset index order), also after a seeded
subsample: the chosen indices are sorted before reading. Every problem with what a user asked for raises
:class:`ImageSourceError`, whose message names the params key, the offending value and what is valid.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustdd.data.images import fit_images, random_crops, skimage_image

CHUNK = 4096  # images converted at once when reading a .npy file
NAMED_SKIPPED = 5  # skipped files named in the warning


class ImageSourceError(ValueError):
    """A user's image source cannot be read; the message names the params key, the value and what is valid."""


class SkippedImagesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were left out."""


def warn(message: str) -> None:
    """A warning line in the stage's log: ``warning: <message>`` on stderr."""
    print(f"warning: {message}", file=sys.stderr)


@contextmanager
def warnings_logged() -> Iterator[None]:
    """The warnings raised inside (e.g. :class:`SkippedImagesWarning`), each as a :func:`warn` line,
    also when the block raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedImagesWarning)
        try:
            yield
        finally:
            for w in caught:
                warn(str(w.message))


def subsample(n: int, max_images: int, generator: torch.Generator, key: str) -> torch.Tensor:
    """Sorted indices of ``max_images`` of ``n`` items drawn without replacement (all when 0 or >= n)."""
    if max_images < 0:
        raise ImageSourceError(f"{key}: max_images must be >= 0 (0 = all images), got {max_images}")
    if max_images == 0 or n <= max_images:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:max_images].sort().values


# ---------------------------------------------------------------------------------------------------
# .npy arrays (e.g. the 300K Random Images file: 300000 x 32 x 32 x 3 uint8)
# ---------------------------------------------------------------------------------------------------


def open_npy(path: str | Path, key: str) -> np.ndarray:
    """A uint8 N x H x W x C (C = 1 or 3) ``.npy`` file, memory-mapped (only its header is read), or
    :class:`ImageSourceError` naming ``key``, the file and what is valid."""
    path = Path(path)
    if not path.exists():
        raise ImageSourceError(f"{key}: {str(path)!r} does not exist; expected a .npy file of uint8 N x H x W x C")
    if path.is_dir():
        raise ImageSourceError(f"{key}: {str(path)!r} is a directory; expected a .npy file of uint8 N x H x W x C")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise ImageSourceError(
            f"{key}: {str(path)!r} is not a valid .npy file ({e}); expected a .npy file of uint8 N x H x W x C"
        ) from None
    if not isinstance(arr, np.ndarray):  # e.g. an .npz archive
        raise ImageSourceError(
            f"{key}: {str(path)!r} is not a .npy array but a {type(arr).__name__}; "
            "expected a .npy file of uint8 N x H x W x C"
        )
    if arr.dtype != np.uint8:
        raise ImageSourceError(
            f"{key}: {str(path)!r} has dtype {arr.dtype}; expected uint8 (pixel values 0-255)"
        )
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        hint = " (for grayscale add a channel axis: x[..., None])" if arr.ndim == 3 else ""
        raise ImageSourceError(
            f"{key}: {str(path)!r} has shape {tuple(arr.shape)}; expected N x H x W x C with C 1 or 3{hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageSourceError(f"{key}: {str(path)!r} holds no images (shape {tuple(arr.shape)})")
    return arr


def read_npy(
    path: str | Path, shape: tuple[int, int, int], max_images: int, generator: torch.Generator, key: str
) -> torch.Tensor:
    """A uint8 N x H x W x C (C = 1 or 3) ``.npy`` file -> uint8 N' x C x H x W of ``shape``.

    Memory-mapped, so only the chosen rows are read; ``max_images`` > 0 keeps a seeded random subset of
    that many. Channels are converted and images resized (plain antialiased resize) by ``fit_images``.
    """
    arr = open_npy(path, key)
    pick = subsample(arr.shape[0], max_images, generator, key).numpy()
    whole = pick.size == arr.shape[0]
    out = torch.empty(pick.size, *shape, dtype=torch.uint8)
    for start in range(0, pick.size, CHUNK):
        stop = min(start + CHUNK, pick.size)
        rows = arr[start:stop] if whole else arr[pick[start:stop]]
        chunk = torch.from_numpy(np.array(rows)).permute(0, 3, 1, 2)
        out[start:stop] = fit_images(chunk, shape)
    return out


# ---------------------------------------------------------------------------------------------------
# PIL images: image folders and torchvision datasets
# ---------------------------------------------------------------------------------------------------


def fit_pil(image: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """A PIL image -> uint8 C x H x W: resize (antialiased) so it covers H x W, center crop, convert channels.

    Colour images are read as RGB and turned gray (for a 1-channel ``shape``) by ``fit_images``, as .npy
    arrays are; gray images stay gray for a 1-channel ``shape``, so their values are kept exactly.
    """
    from torchvision.transforms.v2 import functional as TF  # here: torchvision takes ~3 s to import

    c, h, w = shape
    image.draft(None, (w, h))  # JPEG only: decode at a reduced scale that still covers H x W
    image = _to_8bit(image)
    x = TF.pil_to_tensor(image.convert("L" if c == 1 and image.mode in ("1", "L", "LA") else "RGB"))
    ih, iw = x.shape[-2:]
    scale = max(h / ih, w / iw)
    size = [max(h, round(ih * scale)), max(w, round(iw * scale))]
    if size != [ih, iw]:
        x = TF.resize(x, size, antialias=True)
    return fit_images(TF.center_crop(x, [h, w])[None], shape)[0]


def _to_8bit(image: Any) -> Any:
    """16/32-bit integer images (PIL modes I, I;16...) scaled from 0-65535 to an 8-bit L image; PIL's own
    conversion would clip them to 255."""
    if not image.mode.startswith("I"):
        return image
    from PIL import Image

    x = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.round(x / 257.0), 0, 255).astype(np.uint8))


def image_extensions() -> tuple[str, ...]:
    """File extensions read from folders (lower case, matched case-insensitively): torchvision's list."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(e.lower() for e in IMG_EXTENSIONS)


def _image_files(folder: str, rel: str, exts: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(relative posix path, path) of the image files under ``folder``, any depth, each folder listed
    once (``os.scandir``), files before subfolders; symlinked folders are not entered and unreadable
    folders are passed over, as ``Path.rglob`` does."""
    try:
        listing = os.scandir(folder)
    except PermissionError:
        return
    subfolders = []
    with listing:
        for e in listing:
            if e.is_dir():
                if not e.is_symlink():
                    subfolders.append(e)
            elif os.path.splitext(e.name)[1].lower() in exts and e.is_file():
                yield rel + e.name, e.path
    for d in subfolders:
        yield from _image_files(d.path, f"{rel}{d.name}/", exts)


def list_images(root: Path) -> list[Path]:
    """The image files under the folder ``root`` (by extension, any depth), sorted by relative path."""
    return [Path(f) for _, f in sorted(_image_files(str(root), "", image_extensions()))]


def has_image(root: Path) -> bool:
    """Whether the folder ``root`` holds an image file at any depth; stops at the first one found."""
    found = _image_files(str(root), "", image_extensions())
    try:
        return next(found, None) is not None
    finally:
        found.close()


def looked_for() -> str:
    return f"looked at any depth for {', '.join(image_extensions())}, any case"


@dataclass(frozen=True)
class FolderImages:
    """What :func:`read_folder` read: the images, and the files tried but not decodable (with the reason)."""

    images: torch.Tensor  # uint8 N x C x H x W
    files: list[Path]  # the decoded files, in the order of ``images``
    skipped: list[tuple[Path, str]]  # (file, error)


def read_folder(
    path: str | Path, shape: tuple[int, int, int], max_images: int, generator: torch.Generator, key: str
) -> FolderImages:
    """All image files under ``path`` (any depth, sorted by relative path) -> uint8 images of ``shape``.

    ``max_images`` > 0 keeps a seeded random subset of the FILE list before decoding, so files that fail
    to decode make the result smaller. Undecodable files are skipped and reported in one
    :class:`SkippedImagesWarning`; if none decodes, :class:`ImageSourceError`.
    """
    from PIL import Image

    root = Path(path)
    if not root.exists():
        raise ImageSourceError(f"{key}: {str(root)!r} does not exist; expected a folder of image files")
    if not root.is_dir():
        raise ImageSourceError(f"{key}: {str(root)!r} is not a directory; expected a folder of image files")
    files = list_images(root)
    if not files:
        raise ImageSourceError(f"{key}: no image files found under {str(root)!r} ({looked_for()})")
    chosen = [files[i] for i in subsample(len(files), max_images, generator, key).tolist()]
    out = torch.empty(len(chosen), *shape, dtype=torch.uint8)
    decoded: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for f in chosen:
        try:
            with Image.open(f) as im:
                out[len(decoded)] = fit_pil(im, shape)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            skipped.append((f, f"{type(e).__name__}: {e}"))
            continue
        decoded.append(f)
    if not decoded:
        raise ImageSourceError(
            f"{key}: none of the {len(chosen)} image files tried under {str(root)!r} could be decoded "
            f"(first: {skipped[0][0].relative_to(root).as_posix()}: {skipped[0][1]})"
        )
    warn_skipped(key, root, skipped, len(chosen))
    return FolderImages(out[: len(decoded)], decoded, skipped)


def decode_images(
    files: list[Path], shape: tuple[int, int, int], workers: int = 0
) -> tuple[torch.Tensor, list[int], list[tuple[Path, str]]]:
    """Image files -> (uint8 N' x C x H x W of ``shape`` (cover-resize, centre crop) of the files that
    decode, the indices of those files in ``files``, and (file, error) for each that does not), decoded
    in a thread pool (PIL and torch release the GIL), in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def decode(f: Path) -> torch.Tensor | str:
        try:
            with Image.open(f) as im:
                return fit_pil(im, shape)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return f"{type(e).__name__}: {e}"

    out = torch.empty(len(files), *shape, dtype=torch.uint8)
    kept: list[int] = []
    failed: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for i, result in enumerate(pool.map(decode, files, chunksize=64)):
            if isinstance(result, str):
                failed.append((files[i], result))
            else:
                out[len(kept)] = result
                kept.append(i)
    return out[: len(kept)], kept, failed


def decode_files(files: list[Path], shape: tuple[int, int, int], what: str, workers: int = 0) -> torch.Tensor:
    """:func:`decode_images`, where every file must decode: a dataset's images are not optional, so an
    undecodable file is an :class:`ImageSourceError` that names it (and up to ``NAMED_SKIPPED`` others)."""
    out, _, failed = decode_images(files, shape, workers)
    if failed:
        named = "; ".join(f"{f} ({err})" for f, err in failed[:NAMED_SKIPPED])
        more = f"; and {len(failed) - NAMED_SKIPPED} more" if len(failed) > NAMED_SKIPPED else ""
        raise ImageSourceError(f"{what}: {len(failed)} of {len(files)} image files could not be decoded: {named}{more}")
    return out


def warn_skipped(key: str, root: Path, skipped: list[tuple[Path, str]], tried: int) -> None:
    """One :class:`SkippedImagesWarning` for the files under ``root`` left out because they do not decode
    (nothing when none was); it counts them and names the first ``NAMED_SKIPPED``."""
    if not skipped:
        return
    named = "; ".join(f"{f.relative_to(root).as_posix()} ({err})" for f, err in skipped[:NAMED_SKIPPED])
    more = f"; and {len(skipped) - NAMED_SKIPPED} more" if len(skipped) > NAMED_SKIPPED else ""
    message = f"{key}: skipped {len(skipped)} of {tried} image files under {str(root)!r} that could not be decoded: {named}{more}"
    warnings.warn(message, SkippedImagesWarning, stacklevel=3)


def _dataset_class(name: str, key: str) -> type:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None) if isinstance(name, str) and not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        raise ImageSourceError(
            f"{key}: unknown dataset {name!r}; it must be the name of a torchvision.datasets class, "
            "e.g. CIFAR100, SVHN, FakeData"
        )
    return cls


def _dataset_kwargs(cls: type, root: str | Path, download: bool) -> dict[str, Any]:
    """root, train=True (or else split="train") and download, as far as the constructor takes them.

    A ``split`` whose default names another training split (e.g. Places365's "train-standard") is kept.
    """
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "root" in params:
        kwargs["root"] = str(root)
    if "train" in params:
        kwargs["train"] = True
    elif "split" in params:
        default = params["split"].default
        if not (isinstance(default, str) and default.startswith("train") and default != "train"):
            kwargs["split"] = "train"
    if "download" in params:
        kwargs["download"] = download
    return kwargs


def read_torchvision(
    name: str,
    root: str | Path,
    download: bool,
    shape: tuple[int, int, int],
    max_images: int,
    generator: torch.Generator,
    key: str,
    options: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """The training images of ``torchvision.datasets.<name>`` -> uint8 N x C x H x W of ``shape``.

    ``max_images`` > 0 keeps a seeded random subset of the indices. Images are fitted like folder images
    (cover-resize, center crop). ``options`` are extra constructor arguments and override the defaults.
    """
    cls = _dataset_class(name, key)
    kwargs = {**_dataset_kwargs(cls, root, download), **(options or {})}
    try:
        dataset = cls(**kwargs)
    except (RuntimeError, FileNotFoundError) as e:
        problem = torchvision_problem(cls, root, download, key)
        if problem:  # torchvision's "not found or corrupted": say which files, and what is wrong with each
            raise ImageSourceError(
                f"{key}: torchvision dataset {name} could not be loaded from root {str(root)!r}: {problem}"
            ) from None
        hint = "" if download else "; set download: true on a machine with network, or put the files there"
        raise ImageSourceError(
            f"{key}: torchvision dataset {name} could not be loaded from root {str(root)!r} ({e}){hint}"
        ) from None
    except (TypeError, ValueError) as e:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ImageSourceError(f"{key}: torchvision dataset {name}({args}) could not be built: {e}") from None
    n = len(dataset)
    if n == 0:
        raise ImageSourceError(f"{key}: torchvision dataset {name} under {str(root)!r} holds no images")
    pick = subsample(n, max_images, generator, key).tolist()
    out = torch.empty(len(pick), *shape, dtype=torch.uint8)
    for j, i in enumerate(pick):
        image = dataset[i][0]
        if not hasattr(image, "convert"):
            raise ImageSourceError(
                f"{key}: torchvision dataset {name} gives {type(image).__name__} items, not PIL images"
            )
        out[j] = fit_pil(image, shape)
    return out


# ---------------------------------------------------------------------------------------------------
# Files checked by md5 (torchvision's datasets): which are missing, which differ from the official ones
# ---------------------------------------------------------------------------------------------------

_MD5: dict[tuple[str, int, int], str] = {}


def file_md5(path: str | Path) -> str:
    """The md5 of a file (remembered per path, size and modification time, so a file is read once)."""
    st = os.stat(path)
    k = (str(path), st.st_size, st.st_mtime_ns)
    if k not in _MD5:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _MD5[k] = h.hexdigest()
    return _MD5[k]


@dataclass(frozen=True)
class Mismatch:
    """A file that is present but whose md5 is not the official one."""

    path: Path
    expected: str
    actual: str
    what: str = "md5"  # or e.g. "content md5" (of a .gz file's unpacked content)
    source: str = "torchvision's"  # whose md5 it is

    def __str__(self) -> str:
        return f"{self.path}: {self.what} differs from {self.source} {self.expected}; this file's is {self.actual}"


def blocking(problems: list, verify: bool) -> list:
    """The problems that stop a read: all of them, but with ``data.verify`` false not the files that are
    present with another md5 (those are used, with a warning)."""
    return [p for p in problems if verify or not isinstance(p, Mismatch)]


def check_md5s(files: list[tuple[Path, str | None]]) -> tuple[list[Path], list[Mismatch]]:
    """``(path, md5)`` pairs -> (the missing files, the present files whose md5 differs). A None md5
    checks only that the file is there."""
    missing = [Path(p) for p, _ in files if not Path(p).is_file()]
    differs = []
    for p, md5 in files:
        if md5 and Path(p).is_file():
            actual = file_md5(p)
            if actual != md5:
                differs.append(Mismatch(Path(p), md5, actual))
    return missing, differs


def torchvision_files(cls: type, root: str | Path, splits: tuple[str, ...] = ("train",)) -> list[tuple[Path, str | None]]:
    """The files (with md5, where it checks one) that torchvision's dataset class ``cls`` needs under
    ``root`` for ``splits``, as the class declares them (the one place they are read from, also for
    the InD datasets): CIFAR-10/100's ``base_folder`` with ``train_list``, ``test_list`` and ``meta``
    (all of them, for either split, as torchvision checks them), SVHN's ``split_list``, the MNIST
    family's ``resources`` (both splits, checked unpacked, without md5). Empty for other classes."""
    from torchvision.datasets import MNIST

    root = Path(root)
    if all(hasattr(cls, a) for a in ("base_folder", "train_list", "test_list")):
        files = [(n, m) for n, m in list(cls.train_list) + list(cls.test_list)]
        meta = getattr(cls, "meta", None)
        if isinstance(meta, dict) and "filename" in meta:
            files.append((meta["filename"], meta.get("md5")))
        return [(root / cls.base_folder / n, m) for n, m in files]
    if isinstance(getattr(cls, "split_list", None), dict):
        found = [cls.split_list.get(s) for s in splits]
        return [(root / f[1], f[2]) for f in found if isinstance(f, (list, tuple)) and len(f) == 3]
    if isinstance(cls, type) and issubclass(cls, MNIST):
        return [(root / cls.__name__ / "raw" / Path(u).name.removesuffix(".gz"), None) for u, _ in cls.resources]
    return []


def files_headline(missing: int, differs: int, what: str = "file(s)") -> str:
    """What is wrong, in words that are true for the case: files missing, not the official ones, or both
    (``what`` counts them, e.g. "OOD set(s) with files")."""
    parts = []
    if missing:
        parts.append(f"{missing} {what} missing")
    if differs:
        parts.append(f"{differs} {what} present but not the official ones (md5 differs)")
    return " and ".join(parts)


def torchvision_problem(cls: type, root: str | Path, download: bool, key: str) -> str:
    """Why torchvision's ``cls`` refuses the files under ``root`` (empty when it cannot tell): each
    missing file, and each file whose md5 differs (path, expected and actual md5), with what to do.

    ``data.verify`` does not apply here: torchvision checks its own md5s and has no switch to skip it."""
    files = torchvision_files(cls, root)
    missing, differs = check_md5s(files)
    if not missing and not differs:
        return ""
    listed = "\n".join([f"  missing: {p}" for p in missing] + [f"  {m}" for m in differs])
    fix = []
    if missing:
        fix.append(
            ("put the missing files there" if download else f"set download: true ({key}.download) on a machine "
             "with network, or put the missing files there") + f" (as torchvision.datasets.{cls.__name__} lays them out)"
        )
    if differs:
        fix.append(
            "replace the changed files with the official ones; torchvision checks these md5s itself, so "
            "data.verify does not apply here. To use your own copy, save it as a uint8 N x H x W x C .npy "
            f"file or a folder of images and read it with {key}.format: npy or folder"
        )
    return (
        f"{files_headline(len(missing), len(differs))} ({key}.name {cls.__name__!r}, {key}.path {str(root)!r}):\n"
        f"{listed}\nTo fix: {'; and '.join(fix)}."
    )


# ---------------------------------------------------------------------------------------------------
# The embedded default OE pool: bundled images that appear in no OOD test set
# ---------------------------------------------------------------------------------------------------

# Large photos (scikit-image, scikit-learn) and scikit-image's 200 25x25 LFW patches (100 faces, 100
# non-faces). None of them is in trustdd.data.TEXTURE_IMAGES or PHOTO_IMAGES, and no digits (MNIST is
# an OOD test set).
OE_SKIMAGE_PHOTOS = ("moon", "hubble_deep_field", "immunohistochemistry", "retina", "cell")
OE_SKLEARN_PHOTOS = ("china", "flower")
OE_FACES = "lfw_subset"
EMBEDDED_OE_IMAGES = OE_SKIMAGE_PHOTOS + OE_SKLEARN_PHOTOS + (OE_FACES,)


def _sklearn_photo(name: str) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    return torch.from_numpy(np.array(load_sample_image(f"{name}.jpg"))).permute(2, 0, 1)


def _lfw_patches() -> torch.Tensor:
    """scikit-image's 200 LFW patches as uint8 200 x 1 x 25 x 25 (stored as floats in [0, 1])."""
    import skimage.data

    patches = torch.from_numpy(np.asarray(getattr(skimage.data, OE_FACES)()))
    return (patches.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]


def embedded_photos() -> list[torch.Tensor]:
    """The large embedded photos as uint8 C x H x W, in EMBEDDED_OE_IMAGES order."""
    return [skimage_image(k) for k in OE_SKIMAGE_PHOTOS] + [_sklearn_photo(k) for k in OE_SKLEARN_PHOTOS]


def embedded_pool(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """``n`` seeded OE images of ``shape`` from packages' bundled images; no network.

    One share in eight (``n // 8``, as if the faces were an eighth source) are whole LFW patches, resized,
    drawn without replacement until all 200 are used, then again; the rest are random crops of the seven
    large photos (``trustdd.data.images.random_crops``). The two parts are shuffled together.
    """
    if n < 0:
        raise ValueError(f"embedded_pool: n must be >= 0, got {n}")
    n_faces = n // len(EMBEDDED_OE_IMAGES)
    crops = random_crops(embedded_photos(), n - n_faces, shape, generator)
    if n_faces == 0:
        return crops
    faces = _lfw_patches()
    rounds = -(-n_faces // faces.shape[0])
    order = torch.cat([torch.randperm(faces.shape[0], generator=generator) for _ in range(rounds)])[:n_faces]
    pool = torch.cat([crops, fit_images(faces[order], shape)])
    return pool[torch.randperm(n, generator=generator)].contiguous()
