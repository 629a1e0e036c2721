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
"""

from __future__ import annotations

import gzip
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from trustdd.data import fit_images
from trustdd.image_sources import decode_files
from trustdd.registry import Registry


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor  # uint8 N x C x H x W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = ()


class DataNotFoundError(FileNotFoundError):
    """Raw files are missing and may not be downloaded; the message lists what was expected where."""


class Source:
    """Where a dataset's files live under the root, how to read one split, and how to fetch them."""

    hint = ""  # how to get the files on a machine with network

    def problems(self, root: Path) -> list[str]:
        """What is missing or wrong under ``root`` (empty when the files are ready to read)."""
        return [f"missing: {p}" for p in self.expected(root) if not p.exists()]

    def expected(self, root: Path) -> list[Path]:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        """Download into ``root`` (only called when ``data.download`` is true)."""
        raise DataNotFoundError(f"the files cannot be downloaded automatically: {self.hint}")

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One split -> (uint8 N x C x size x size, int64 labels)."""
        raise NotImplementedError

    def classes(self, root: Path) -> tuple[str, ...]:
        return ()


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

    def ensure(self, root: Path, download: bool) -> None:
        """Make sure the files are under ``root`` (downloading when allowed), else DataNotFoundError."""
        problems = self.source.problems(root)
        if problems and download:
            self.source.fetch(root)
            problems = self.source.problems(root)
        if problems:
            expected = self.source.expected(root)
            listed = "\n".join(f"  {p}" for p in expected)
            if problems != [f"missing: {p}" for p in expected]:  # not simply all missing: say what is wrong
                more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
                listed += "\nProblems:\n" + "\n".join(f"  {p}" for p in problems[:12]) + more
            offline = "data.download is false" if not download else "the download did not provide them"
            raise DataNotFoundError(
                f"dataset {self.name!r}: files not found under data.root {str(root)!r} and {offline}.\n"
                f"Expected:\n{listed}\n"
                f"To get them: {self.source.hint}. Set data.root (or the environment variable TRUSTDD_DATA_ROOT) "
                f"to the folder that holds them, or set data.download: true on a machine with network."
            )

    def load(self, root: Path, download: bool, image_size: int = 0) -> Split:
        root = Path(root)
        self.ensure(root, download)
        size = image_size or self.image_size
        train_x, train_y = self.source.read(root, True, size)
        test_x, test_y = self.source.read(root, False, size)
        for split, y in (("train", train_y), ("test", test_y)):
            if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < self.num_classes:
                raise DataNotFoundError(
                    f"dataset {self.name!r}: {split} labels span {int(y.min())}..{int(y.max())}, outside the "
                    f"{self.num_classes} classes of this dataset; the files under {str(root)!r} are not {self.name}"
                )
        return Split(train_x, train_y, test_x, test_y, self.source.classes(root))

    def load_test(self, root: Path, download: bool, shape: tuple[int, int, int]) -> torch.Tensor:
        """The test images only, fitted to ``shape`` (another dataset's), e.g. to serve as an OOD set."""
        root = Path(root)
        self.ensure(root, download)
        x, _ = self.source.read(root, False, shape[-1])
        return fit_images(x, shape)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size and x.shape[-2] == size else fit_images(x, (x.shape[1], size, size))


def _md5_problems(files: list[tuple[Path, str]]) -> list[str]:
    """The files (of ``(path, md5)``) that exist but fail torchvision's md5; missing ones are reported apart."""
    return [
        f"{path}: md5 differs from torchvision's {md5}"
        for path, md5 in files
        if path.exists() and not check_integrity(str(path), md5)
    ]


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

    def __init__(self, tv_class: type, search_dirs: list[Path], hint: str) -> None:
        self.tv_class = tv_class
        self.search_dirs = search_dirs
        self.hint = hint

    def raw(self, root: Path) -> Path:
        return root / self.tv_class.__name__ / "raw"

    def expected(self, root: Path) -> list[Path]:
        return [self.raw(root) / filename for filename, _ in self.tv_class.resources]

    def problems(self, root: Path) -> list[str]:
        unpacked_md5 = IDX_MD5.get(self.tv_class.__name__, {})
        problems = []
        for filename, gz_md5 in self.tv_class.resources:
            name = filename.removesuffix(".gz")
            unpacked = self.raw(root) / name
            if unpacked.exists() and (name not in unpacked_md5 or check_integrity(str(unpacked), unpacked_md5[name])):
                continue
            for candidate in [self.raw(root) / filename] + [d / filename for d in self.search_dirs]:
                if not candidate.exists():
                    continue
                if name not in unpacked_md5 and not check_integrity(str(candidate), gz_md5):
                    problems.append(f"{candidate}: md5 differs from torchvision's {gz_md5}")
                    continue
                if self._unpack(candidate, unpacked, unpacked_md5.get(name)):
                    break
                problems.append(f"{candidate}: content md5 differs from the expected {unpacked_md5[name]}")
            else:
                problems.append(
                    f"{name}: no verified copy found (looked in {self.raw(root)}"
                    + "".join(f", {d}" for d in self.search_dirs)
                    + ")"
                )
        return problems

    @staticmethod
    def _unpack(gz: Path, unpacked: Path, md5: str | None) -> bool:
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        tmp = unpacked.with_suffix(".partial")
        with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        if md5 is None or check_integrity(str(tmp), md5):
            tmp.replace(unpacked)
            return True
        tmp.unlink()
        return False

    def fetch(self, root: Path) -> None:
        self.tv_class(str(root), train=True, download=True)
        self.tv_class(str(root), train=False, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.tv_class(str(root), train=train, download=False)
        return _resized(ds.data.unsqueeze(1).contiguous(), size), ds.targets.long()

    def classes(self, root: Path) -> tuple[str, ...]:
        return tuple(self.tv_class.classes)


# ---------------------------------------------------------------------------------------------------
# SVHN, CIFAR-10, CIFAR-100: torchvision's readers, which verify every file's md5
# ---------------------------------------------------------------------------------------------------


class CifarSource(Source):
    """``ROOT/cifar-10-batches-py/`` or ``ROOT/cifar-100-python/``, as torchvision extracts them."""

    def __init__(self, tv_class: type) -> None:
        self.tv_class = tv_class
        self.hint = (
            f"download {tv_class.url} and extract it into data.root "
            f"(or run torchvision.datasets.{tv_class.__name__}(root, download=True) on a machine with network)"
        )

    def expected(self, root: Path) -> list[Path]:
        c = self.tv_class
        files = [name for name, _ in c.train_list + c.test_list] + [c.meta["filename"]]
        return [root / c.base_folder / name for name in files]

    def problems(self, root: Path) -> list[str]:
        c = self.tv_class
        files = c.train_list + c.test_list + [[c.meta["filename"], c.meta["md5"]]]
        return super().problems(root) + _md5_problems([(root / c.base_folder / name, md5) for name, md5 in files])

    def fetch(self, root: Path) -> None:
        self.tv_class(str(root), train=True, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.tv_class(str(root), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # N x 32 x 32 x 3 -> N x 3 x 32 x 32
        return _resized(x, size), torch.tensor(ds.targets, dtype=torch.long)

    def classes(self, root: Path) -> tuple[str, ...]:
        with open(root / self.tv_class.base_folder / self.tv_class.meta["filename"], "rb") as f:
            return tuple(pickle.load(f, encoding="latin1")[self.tv_class.meta["key"]])


class SvhnSource(Source):
    """``ROOT/train_32x32.mat`` and ``ROOT/test_32x32.mat`` (torchvision's layout). Digit 0 is label 0."""

    hint = (
        "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into "
        "data.root (or run torchvision.datasets.SVHN(root, split=..., download=True) on a machine with network)"
    )

    def expected(self, root: Path) -> list[Path]:
        return [root / SVHN.split_list[s][1] for s in ("train", "test")]

    def problems(self, root: Path) -> list[str]:
        files = [(root / SVHN.split_list[s][1], SVHN.split_list[s][2]) for s in ("train", "test")]
        return super().problems(root) + _md5_problems(files)

    def fetch(self, root: Path) -> None:
        for s in ("train", "test"):
            SVHN(str(root), split=s, download=True)

    def read(self, root: Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = SVHN(str(root), split="train" if train else "test", download=False)
        return _resized(torch.from_numpy(ds.data).contiguous(), size), torch.from_numpy(ds.labels).long()

    def classes(self, root: Path) -> tuple[str, ...]:
        return tuple(str(d) for d in range(10))


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

    def problems(self, root: Path) -> list[str]:
        problems = super().problems(root)
        if problems:
            return problems
        train = root / self.folder / "train"
        return [f"missing: {train / w / 'images'}" for w in self.wnids(root) if not (train / w / "images").is_dir()]

    def fetch(self, root: Path) -> None:
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
            MNIST,
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
            FashionMNIST,
            [DEBIAN_FASHION_MNIST],
            "run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or copy the four .gz files into "
            "ROOT/FashionMNIST/raw/",
        ),
    )
)
_register(DatasetInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), SvhnSource()))
_register(DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), CifarSource(CIFAR10)))
_register(
    DatasetInfo("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), CifarSource(CIFAR100))
)
_register(DatasetInfo("tiny_imagenet", 3, 64, 200, IMAGENET_MEAN, IMAGENET_STD, TinyImageNetSource()))
for _name, _classes in IMAGENET_SUBSETS.items():
    _wnids, _names = zip(*_classes)
    _register(DatasetInfo(_name, 3, 128, 10, IMAGENET_MEAN, IMAGENET_STD, ImageNetSubsetSource(_wnids, _names)))
