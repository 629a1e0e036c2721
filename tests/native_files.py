"""Small files in each research dataset's native on-disk format, as its official archive unpacks, for
tests and smoke runs of the paper presets (``presets/*.yaml``) without the real data.

Every writer takes the data root and a ``seed`` (``numpy.random.default_rng``), and writes deterministic
random-ish images (a coarse random pattern plus noise; JPEGs small and quick to write):

- :func:`write_cifar10`: ``cifar-10-batches-py/`` of ``cifar-10-python.tar.gz`` (protocol-2 pickles
  ``data_batch_1..5``, ``test_batch``, ``batches.meta``), the order shuffled as in the official batches.
- :func:`write_cifar100`: ``cifar-100-python/`` of ``cifar-100-python.tar.gz`` (``train``, ``test``,
  ``meta``), with the official fine and coarse class names and the fine-to-coarse mapping.
- :func:`write_svhn`: ``train_32x32.mat`` and ``test_32x32.mat`` of SVHN's cropped digits (``X`` H x W x C
  x N uint8, ``y`` N x 1 with 10 for the digit 0).
- :func:`write_tiny_imagenet`: ``tiny-imagenet-200/`` of ``tiny-imagenet-200.zip`` (``wnids.txt`` unsorted,
  ``words.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG`` with ``<wnid>_boxes.txt``, ``val/images/val_<k>.JPEG``
  with ``val_annotations.txt``, ``test/images/``); 64 x 64 JPEGs, some grayscale as in the real archive.
- :func:`write_imagenet_subset`: ``imagenet/{train,val}/<wnid>/`` as ImageNet-1k (val sorted into wnid
  folders, torchvision's layout) or fast.ai's imagenette2 unpack, for one of MTT's subsets; non-square
  JPEGs of two sizes, some grayscale, so the reader's resize and centre crop are exercised.
- The CIFAR protocol's OOD folders: :func:`write_dtd` (``dtd/images/<category>/`` of ``dtd-r1.0.1.tar.gz``),
  :func:`write_places365` (``places365/val_256/`` of Places365-Standard's ``val_256.tar``, 256 x 256),
  and ODIN's archives: :func:`write_lsun_crop` (``LSUN/test/``, 36 x 36), :func:`write_lsun_resize`
  (``LSUN_resize/LSUN_resize/``), :func:`write_isun` (``iSUN/iSUN_patches/``, ``.jpeg``) and
  :func:`write_imagenet_resize` (``Imagenet_resize/Imagenet_resize/``), all 32 x 32.
- :func:`write_oe_300k`: Outlier Exposure's ``300K_random_images.npy`` (uint8 N x 32 x 32 x 3).
- :func:`write_research_root`: everything one preset reads (its InD dataset and every OOD set of
  ``ood.sets`` that is read from files).

The md5s differ from the official files', so read them with ``data.verify: false`` (or ``verify=False``).
In the InD image writers (Tiny-ImageNet, ImageNet subsets) a colour image's mean colour encodes its class
(:func:`class_colour`), so a test can check that labels travel with their images through a reader.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from trustdd.data.datasets import IMAGENET_SUBSETS

PRESETS = Path(__file__).resolve().parents[1] / "presets"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100's superclasses (coarse labels) and their five classes each; both lists are sorted in the meta file.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE = tuple(sorted(CIFAR100_SUPERCLASSES))
CIFAR100_CLASSES = tuple(sorted(f for fs in CIFAR100_SUPERCLASSES.values() for f in fs))
CIFAR100_COARSE_OF = {f: CIFAR100_COARSE.index(c) for c, fs in CIFAR100_SUPERCLASSES.items() for f in fs}
GRAY_EVERY = 8  # every 8th InD JPEG is grayscale (the Tiny-ImageNet and ImageNet archives hold some)


@dataclass(frozen=True)
class Written:
    """What a dataset writer put under the root, in the order its reader returns it: labels, class names,
    and for the lossless formats (pickles, .mat) the exact images (uint8 N x C x H x W); for image
    folders, the test files in the reader's order."""

    path: Path  # the dataset's folder (or, for SVHN, the root)
    classes: tuple[str, ...]
    train_y: np.ndarray  # int64
    test_y: np.ndarray
    train_x: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_files: tuple[Path, ...] = ()

    @property
    def train_count(self) -> int:
        return int(self.train_y.size)


# ---------------------------------------------------------------------------------------------------
# Pixels and files
# ---------------------------------------------------------------------------------------------------


def _pixels(rng: np.random.Generator, n: int, h: int, w: int, tint: np.ndarray | None = None) -> np.ndarray:
    """uint8 n x h x w x 3: a random 4 x 4 pattern blown up, plus noise (+-12); with ``tint`` (n x 3), each
    image's pattern is small (+-16) around its tint colour, so its mean colour is about the tint."""
    if tint is None:
        grid = rng.integers(0, 256, (n, 4, 4, 3))
    else:
        grid = rng.integers(-16, 17, (n, 4, 4, 3)) + tint[:, None, None, :]
    x = grid[:, np.arange(h) * 4 // h][:, :, np.arange(w) * 4 // w] + rng.integers(-12, 13, (n, h, w, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def class_colour(label: int | np.ndarray) -> np.ndarray:
    """The mean RGB colour (float) of a colour image of class ``label`` in the InD image writers: the
    class in base 6, one digit a channel, each 40..240 (216 classes at most)."""
    label = np.asarray(label)
    return 40.0 + 40.0 * np.stack([label % 6, label // 6 % 6, label // 36 % 6], axis=-1)


def _save(paths: Sequence[Path], rng: np.random.Generator, sizes: Sequence[tuple[int, int]],
          labels: Sequence[int] | None = None, gray_every: int = 0) -> int:
    """One JPEG per path (PIL picks JPEG from the extension), ``sizes[i % len(sizes)]`` = (width, height);
    tinted by class with ``labels``; every ``gray_every``-th one (the last of each run) saved grayscale."""
    for i, path in enumerate(paths):
        w, h = sizes[i % len(sizes)]
        tint = class_colour(np.array([labels[i]])) if labels is not None else None
        x = _pixels(rng, 1, h, w, tint)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        gray = gray_every and i % gray_every == gray_every - 1
        Image.fromarray(x[..., 1] if gray else x).save(path, quality=90)
    return len(paths)


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are Python 2 pickles


def _shuffled_labels(rng: np.random.Generator, classes: int, per_class: int) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(classes), per_class)).astype(np.int64)


def _boxes(rng: np.random.Generator, n: int, side: int = 64) -> np.ndarray:
    lo = rng.integers(0, side // 2, (n, 2))
    return np.concatenate([lo, lo + rng.integers(side // 4, side // 2, (n, 2))], axis=1)


# ---------------------------------------------------------------------------------------------------
# In-distribution datasets
# ---------------------------------------------------------------------------------------------------


def write_cifar10(root: Path, train_per_class: int = 10, test_per_class: int = 2, seed: int = 0) -> Written:
    """``root/cifar-10-batches-py/``: ``data_batch_1..5`` (the shuffled train images spread over the five),
    ``test_batch`` and ``batches.meta``, keys as the official pickles."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-10-batches-py"
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        y = _shuffled_labels(rng, 10, per_class)
        out[split] = (_pixels(rng, y.size, 32, 32).transpose(0, 3, 1, 2).copy(), y)
    batches = np.array_split(np.arange(out["train"][1].size), 5)
    files = [(f"data_batch_{b + 1}", "train", idx, f"training batch {b + 1} of 5") for b, idx in enumerate(batches)]
    files.append(("test_batch", "test", np.arange(out["test"][1].size), "testing batch 1 of 1"))
    for name, split, idx, label in files:
        x, y = out[split][0][idx], out[split][1][idx]
        _pickle(base / name, {
            "batch_label": label, "labels": y.tolist(), "data": x.reshape(len(idx), 3072),
            "filenames": [f"{CIFAR10_CLASSES[c]}_s_{int(i):06d}.png" for c, i in zip(y, idx)],
        })
    _pickle(base / "batches.meta", {"num_cases_per_batch": len(batches[0]), "label_names": list(CIFAR10_CLASSES), "num_vis": 3072})
    return Written(base, CIFAR10_CLASSES, out["train"][1], out["test"][1], out["train"][0], out["test"][0])


def write_cifar100(root: Path, train_per_class: int = 10, test_per_class: int = 2, seed: int = 0) -> Written:
    """``root/cifar-100-python/``: ``train``, ``test`` (``fine_labels``, ``coarse_labels``) and ``meta``
    (``fine_label_names``, ``coarse_label_names``), as the official pickles."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, per_class, label in (("train", train_per_class, "training"), ("test", test_per_class, "testing")):
        y = _shuffled_labels(rng, 100, per_class)
        x = _pixels(rng, y.size, 32, 32).transpose(0, 3, 1, 2).copy()
        _pickle(base / split, {
            "filenames": [f"{CIFAR100_CLASSES[c]}_s_{i:06d}.png" for i, c in enumerate(y)],
            "batch_label": f"{label} batch 1 of 1", "fine_labels": y.tolist(),
            "coarse_labels": [CIFAR100_COARSE_OF[CIFAR100_CLASSES[c]] for c in y], "data": x.reshape(y.size, 3072),
        })
        out[split] = (x, y)
    _pickle(base / "meta", {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": list(CIFAR100_COARSE)})
    return Written(base, CIFAR100_CLASSES, out["train"][1], out["test"][1], out["train"][0], out["test"][0])


def write_svhn(root: Path, train_per_class: int = 10, test_per_class: int = 2, seed: int = 0) -> Written:
    """``root/train_32x32.mat`` and ``root/test_32x32.mat``: ``X`` 32 x 32 x 3 x N uint8 and ``y`` N x 1
    uint8 in 1..10, 10 standing for the digit 0 (the Written labels are the digits)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        digits = _shuffled_labels(rng, 10, per_class)
        x = _pixels(rng, digits.size, 32, 32)  # N x H x W x C
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        Path(root).mkdir(parents=True, exist_ok=True)
        savemat(Path(root) / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y})
        out[split] = (x.transpose(0, 3, 1, 2).copy(), digits)
    digits = tuple(str(d) for d in range(10))
    return Written(Path(root), digits, out["train"][1], out["test"][1], out["train"][0], out["test"][0])


def tiny_wnids(seed: int = 0) -> list[str]:
    """200 distinct ImageNet-looking wnids (``n`` and 8 digits), in the unsorted order of ``wnids.txt``."""
    return [f"n{v:08d}" for v in np.random.default_rng(seed).choice(np.arange(1_000_000, 15_000_000), 200, replace=False)]


def write_tiny_imagenet(root: Path, train_per_class: int = 10, val_per_class: int = 2, test_images: int = 4,
                        seed: int = 0) -> Written:
    """``root/tiny-imagenet-200/`` as the official zip unpacks: ``wnids.txt`` (200 wnids, unsorted),
    ``words.txt`` (names of these and of a few other wnids), ``train/<wnid>/images/<wnid>_<i>.JPEG`` and
    ``train/<wnid>/<wnid>_boxes.txt``, ``val/images/val_<k>.JPEG`` (classes shuffled) labelled in
    ``val/val_annotations.txt`` (file, wnid, 4 box ints, tab-separated), ``test/images/test_<k>.JPEG``.
    Labels are indices in the sorted wnids (the reader's order); class c is named ``tiny class <c>``."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "tiny-imagenet-200"
    listed = tiny_wnids(seed)
    wnids = sorted(listed)
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in listed))
    extra = [f"n{v:08d}" for v in (1740, 1930, 2137)]  # words.txt lists all of ImageNet's wnids, not only these
    names = {w: f"tiny class {c}, alias {c}" for c, w in enumerate(wnids)} | {w: "entity" for w in extra}
    (base / "words.txt").write_text("".join(f"{w}\t{names[w]}\n" for w in sorted(names)))
    for c, w in enumerate(wnids):
        files = [base / "train" / w / "images" / f"{w}_{i}.JPEG" for i in range(train_per_class)]
        _save(files, rng, [(64, 64)], [c] * train_per_class, GRAY_EVERY)
        (base / "train" / w).mkdir(parents=True, exist_ok=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text(
            "".join(f"{f.name}\t" + "\t".join(map(str, b)) + "\n" for f, b in zip(files, _boxes(rng, len(files))))
        )
    val_y = _shuffled_labels(rng, 200, val_per_class)
    val_files = [base / "val" / "images" / f"val_{k}.JPEG" for k in range(val_y.size)]
    _save(val_files, rng, [(64, 64)], val_y.tolist(), GRAY_EVERY)
    (base / "val").mkdir(parents=True, exist_ok=True)
    (base / "val" / "val_annotations.txt").write_text("".join(
        f"{f.name}\t{wnids[c]}\t" + "\t".join(map(str, b)) + "\n" for f, c, b in zip(val_files, val_y, _boxes(rng, val_y.size))
    ))
    _save([base / "test" / "images" / f"test_{k}.JPEG" for k in range(test_images)], rng, [(64, 64)])
    classes = tuple(f"tiny class {c}" for c in range(200))
    return Written(base, classes, np.repeat(np.arange(200), train_per_class), val_y, test_files=tuple(val_files))


IMAGENET_SIZES = ((150, 120), (140, 170))  # (width, height): landscape and portrait, neither square


def write_imagenet_subset(root: Path, subset: str = "imagenette", train_per_class: int = 10, val_per_class: int = 2,
                          seed: int = 0) -> Written:
    """``root/imagenet/train/<wnid>/<wnid>_<i>.JPEG`` and ``root/imagenet/val/<wnid>/ILSVRC2012_val_<k>.JPEG``
    for the wnids of ``subset`` (a key of IMAGENET_SUBSETS), as ImageNet-1k with its val images sorted into
    wnid folders (and fast.ai's imagenette2/imagewoof2) unpack; images of IMAGENET_SIZES."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "imagenet"
    wnids, names = zip(*IMAGENET_SUBSETS[subset])
    val_files: list[Path] = []
    for c, w in enumerate(wnids):
        train = [base / "train" / w / f"{w}_{1000 + 37 * i}.JPEG" for i in range(train_per_class)]
        _save(train, rng, IMAGENET_SIZES, [c] * train_per_class, GRAY_EVERY)
        val = [base / "val" / w / f"ILSVRC2012_val_{c * val_per_class + i + 1:08d}.JPEG" for i in range(val_per_class)]
        _save(val, rng, IMAGENET_SIZES[::-1], [c] * val_per_class, GRAY_EVERY)
        val_files += val
    per = np.arange(len(wnids))
    return Written(base, tuple(names), np.repeat(per, train_per_class), np.repeat(per, val_per_class), test_files=tuple(val_files))


# ---------------------------------------------------------------------------------------------------
# OOD image folders (the CIFAR protocol's), and the OE file
# ---------------------------------------------------------------------------------------------------

DTD_CATEGORIES = ("banded", "braided", "bubbly", "cracked")


def write_dtd(root: Path, per_category: int = 2, categories: Sequence[str] = DTD_CATEGORIES, seed: int = 0) -> int:
    """``root/dtd/images/<category>/<category>_<nnnn>.jpg`` (and ``dtd/labels/``), as dtd-r1.0.1.tar.gz;
    non-square images (the real ones are 300-640 pixels a side; smaller here). Returns the image count."""
    rng = np.random.default_rng(seed)
    files = [Path(root) / "dtd" / "images" / c / f"{c}_{i + 1:04d}.jpg" for c in categories for i in range(per_category)]
    (Path(root) / "dtd" / "labels").mkdir(parents=True, exist_ok=True)
    (Path(root) / "dtd" / "labels" / "test1.txt").write_text("".join(f"{f.parent.name}/{f.name}\n" for f in files))
    return _save(files, rng, [(80, 64), (64, 72)])


def write_places365(root: Path, n: int = 8, seed: int = 0) -> int:
    """``root/places365/val_256/Places365_val_<nnnnnnnn>.jpg``, 256 x 256 (val_256.tar, extracted into
    ``places365/``, flat)."""
    files = [Path(root) / "places365" / "val_256" / f"Places365_val_{i + 1:08d}.jpg" for i in range(n)]
    return _save(files, np.random.default_rng(seed), [(256, 256)])


def _odin(root: Path, folder: str, n: int, side: int, ext: str, seed: int) -> int:
    files = [Path(root) / folder / f"{i}.{ext}" for i in range(n)]
    return _save(files, np.random.default_rng(seed), [(side, side)])


def write_lsun_crop(root: Path, n: int = 8, seed: int = 0) -> int:
    """ODIN's LSUN.tar.gz (LSUN crop): ``root/LSUN/test/<i>.jpg``, 36 x 36."""
    return _odin(root, "LSUN/test", n, 36, "jpg", seed)


def write_lsun_resize(root: Path, n: int = 8, seed: int = 0) -> int:
    """ODIN's LSUN_resize.tar.gz: ``root/LSUN_resize/LSUN_resize/<i>.jpg``, 32 x 32."""
    return _odin(root, "LSUN_resize/LSUN_resize", n, 32, "jpg", seed)


def write_isun(root: Path, n: int = 8, seed: int = 0) -> int:
    """ODIN's iSUN.tar.gz: ``root/iSUN/iSUN_patches/<i>.jpeg``, 32 x 32."""
    return _odin(root, "iSUN/iSUN_patches", n, 32, "jpeg", seed)


def write_imagenet_resize(root: Path, n: int = 8, seed: int = 0) -> int:
    """ODIN's Imagenet_resize.tar.gz (TinyImageNet resize, the ``tin_resize`` set):
    ``root/Imagenet_resize/Imagenet_resize/<i>.jpg``, 32 x 32."""
    return _odin(root, "Imagenet_resize/Imagenet_resize", n, 32, "jpg", seed)


def write_oe_300k(root: Path, n: int = 64, seed: int = 0) -> Path:
    """``root/300K_random_images.npy``: uint8 n x 32 x 32 x 3 (the real file has n = 300,000)."""
    path = Path(root) / "300K_random_images.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, _pixels(np.random.default_rng(seed), n, 32, 32))
    return path


# ---------------------------------------------------------------------------------------------------
# Everything a preset reads
# ---------------------------------------------------------------------------------------------------

IND_WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn}
OOD_FOLDER_WRITERS = {
    "dtd": lambda root, n, seed: write_dtd(root, -(-n // len(DTD_CATEGORIES)), seed=seed),
    "places365": write_places365, "lsun_crop": write_lsun_crop, "lsun_resize": write_lsun_resize,
    "isun": write_isun, "tin_resize": write_imagenet_resize,
}
FILELESS_OOD = ("mnist", "textures", "photos", "gaussian_noise", "uniform_noise")  # ship inside packages


def write_dataset(root: Path, dataset: str, train_per_class: int, test_per_class: int, seed: int = 0) -> Written:
    """The InD dataset ``dataset`` (a DATASETS name with a native writer) under ``root``."""
    if dataset == "tiny_imagenet":
        return write_tiny_imagenet(root, train_per_class, test_per_class, seed=seed)
    if dataset in IMAGENET_SUBSETS:
        return write_imagenet_subset(root, dataset, train_per_class, test_per_class, seed=seed)
    if dataset not in IND_WRITERS:
        raise KeyError(f"no native writer for dataset {dataset!r}")
    return IND_WRITERS[dataset](root, train_per_class, test_per_class, seed=seed)


def write_research_root(root: Path, preset: str | Mapping, per_class: int | None = None, test_per_class: int = 2,
                        ood_images: int = 8, oe_images: int = 0, seed: int = 0) -> dict[str, Written | int | Path]:
    """Everything ``preset`` (a name in presets/, or a preset's mapping) reads under ``root``: its InD
    dataset with ``per_class`` train images per class (default: the preset's ipc, at least 10 as a smoke
    run's train cap takes) and ``test_per_class`` test images, and every OOD set of ``ood.sets`` that is
    read from files (``ood_images`` images per folder set; the test split of a dataset-backed set has
    about ``ood_images`` images, and its train split one image per class; Tiny-ImageNet for ``tin`` is
    the whole tree at one image per class and split). With ``oe_images`` > 0 also the OE .npy file, under
    the key ``"oe"``. Returns {dataset or set name: what was written}."""
    p = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text()) if isinstance(preset, str) else preset
    dataset, sets = p["dataset"], tuple(p.get("ood", {}).get("sets", ()))
    root = Path(root)
    out: dict[str, Written | int | Path] = {
        dataset: write_dataset(root, dataset, per_class or max(int(p.get("ipc", 1)), 10), test_per_class, seed)
    }
    for k, name in enumerate(sets, 1):
        if name in FILELESS_OOD:
            continue
        if name in OOD_FOLDER_WRITERS:
            out[name] = OOD_FOLDER_WRITERS[name](root, ood_images, seed + k)
        elif name == "tin":
            out[name] = write_tiny_imagenet(root, 1, 1, 1, seed + k)
        else:
            classes = 100 if name == "cifar100" else 10
            out[name] = write_dataset(root, name, 1, max(1, -(-ood_images // classes)), seed + k)
    if oe_images:
        out["oe"] = write_oe_300k(root, oe_images, seed)
    return out
