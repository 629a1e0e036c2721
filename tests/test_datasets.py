"""The InD dataset loaders, each on tiny files written here in the dataset's native format, offline."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, MNIST, SVHN

from trustdd import datasets
from trustdd.datasets import DATASETS, IMAGENET_SUBSETS, DataNotFoundError
from trustdd.image_sources import ImageSourceError

from conftest import cifar_images as _cifar_images, md5, write_pickle as _pickle

IDX_NAMES = {
    "train-images-idx3-ubyte": "images",
    "train-labels-idx1-ubyte": "labels",
    "t10k-images-idx3-ubyte": "images",
    "t10k-labels-idx1-ubyte": "labels",
}


def _idx_bytes(kind: str, array: torch.Tensor) -> bytes:
    if kind == "images":
        n, h, w = array.shape
        return struct.pack(">IIII", 0x00000803, n, h, w) + array.numpy().tobytes()
    return struct.pack(">II", 0x00000801, array.shape[0]) + array.numpy().tobytes()


def _idx_content() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "train-images-idx3-ubyte": torch.randint(0, 256, (20, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(20, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (10, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": torch.arange(10, dtype=torch.uint8).flip(0),
    }


def _write_idx(folder: Path, content: dict[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """The .gz files; returns {name: (md5 of the unpacked file, md5 of the .gz)}."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, array in content.items():
        raw = _idx_bytes(IDX_NAMES[name], array)
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(raw)
        sums[name] = (hashlib.md5(raw).hexdigest(), md5(folder / f"{name}.gz"))
    return sums


# ---------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fashion_root(tmp_path, monkeypatch):
    content = _idx_content()
    sums = _write_idx(tmp_path / "root" / "FashionMNIST" / "raw", content)
    monkeypatch.setitem(datasets.IDX_MD5, "FashionMNIST", {k: v[0] for k, v in sums.items()})
    return tmp_path / "root", content


def test_fashion_mnist_idx_reader_returns_the_written_images(fashion_root):
    root, content = fashion_root
    info = DATASETS.get("fashion_mnist")
    split = info.load(root, False)
    assert split.train_x.shape == (20, 1, 28, 28) and split.train_x.dtype == torch.uint8
    assert torch.equal(split.train_x[:, 0], content["train-images-idx3-ubyte"])
    assert torch.equal(split.test_y, content["t10k-labels-idx1-ubyte"].long())
    assert split.classes[0] == "T-shirt/top" and len(split.classes) == 10
    assert (info.mean, info.std, info.shape()) == ((0.2860,), (0.3530,), (1, 28, 28))


def test_fashion_mnist_missing_offline_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(DATASETS.get("fashion_mnist").source, "search_dirs", [tmp_path / "no-debian"])
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("fashion_mnist").load(tmp_path / "empty", False)
    msg = str(err.value)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data.download" in msg and "TRUSTDD_DATA_ROOT" in msg
    assert str(tmp_path / "no-debian") in msg


def test_a_corrupt_idx_file_is_rejected_by_checksum(fashion_root):
    root, _ = fashion_root
    with gzip.open(root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes("labels", torch.zeros(20, dtype=torch.uint8)))
    with pytest.raises(DataNotFoundError, match="content md5 differs"):
        DATASETS.get("fashion_mnist").load(root, False)


@pytest.mark.skipif(
    not datasets.DEBIAN_FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_from_debian(tmp_path):
    split = DATASETS.get("fashion_mnist").load(tmp_path, False)
    assert split.train_x.shape == (60000, 1, 28, 28)
    assert split.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(split.train_y).tolist() == [6000] * 10
    assert torch.bincount(split.test_y).tolist() == [1000] * 10


def test_mnist_gz_files_checked_against_torchvision_md5s(tmp_path, monkeypatch):
    content = _idx_content()
    sums = _write_idx(tmp_path / "MNIST" / "raw", content)
    monkeypatch.setattr(MNIST, "resources", [(f"{n}.gz", sums[n][1]) for n in IDX_NAMES])
    info = DATASETS.get("mnist")
    split = info.load(tmp_path, False)
    assert torch.equal(split.train_x[:, 0], content["train-images-idx3-ubyte"])
    assert split.classes[3] == "3 - three" and info.mean == (0.1307,)
    # a .gz that does not match torchvision's md5 is refused before it is unpacked
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setattr(MNIST, "resources", [(f"{n}.gz", "0" * 32) for n in IDX_NAMES])
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte.gz: md5 differs from torchvision's 0{32}"):
        info.load(tmp_path, False)


def test_image_size_resizes_any_dataset(fashion_root):
    root, _ = fashion_root
    split = DATASETS.get("fashion_mnist").load(root, False, image_size=32)
    assert split.train_x.shape == (20, 1, 32, 32) and split.test_x.shape == (10, 1, 32, 32)


# ---------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (pickled batches)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    """Five train batches of 4 images, a test batch of 6, and the class names, as CIFAR-10 ships them."""
    base = tmp_path / "cifar-10-batches-py"
    train = [(_cifar_images(4, i), [(i + j) % 10 for j in range(4)]) for i in range(5)]
    for i, (x, y) in enumerate(train, 1):
        _pickle(base / f"data_batch_{i}", {"data": x.reshape(4, -1), "labels": y})
    test_x = _cifar_images(6, 9)
    _pickle(base / "test_batch", {"data": test_x.reshape(6, -1), "labels": [9, 8, 7, 0, 1, 2]})
    names = [f"class{c}" for c in range(10)][::-1]
    _pickle(base / "batches.meta", {"label_names": names})
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{i}", md5(base / f"data_batch_{i}")] for i in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(base / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(base / "batches.meta")})
    return tmp_path, train, test_x, names


def test_cifar10_reads_batches_in_order_with_labels_and_names(cifar10_root):
    root, train, test_x, names = cifar10_root
    info = DATASETS.get("cifar10")
    split = info.load(root, False)
    assert split.train_x.shape == (20, 3, 32, 32) and split.train_x.dtype == torch.uint8
    assert torch.equal(split.train_x, torch.from_numpy(np.concatenate([x for x, _ in train])))
    assert split.train_y.tolist() == sum((y for _, y in train), [])
    assert torch.equal(split.test_x, torch.from_numpy(test_x)) and split.test_y.tolist() == [9, 8, 7, 0, 1, 2]
    assert split.classes == tuple(names)  # the order of batches.meta, not sorted
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010)


def test_cifar10_missing_lists_every_expected_file_and_the_download(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("cifar10").load(tmp_path, False)
    msg = str(err.value)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        assert str(tmp_path / "cifar-10-batches-py" / name) in msg
    assert "cifar-10-python.tar.gz" in msg and "data.download is false" in msg


def test_cifar10_a_changed_batch_fails_its_md5(cifar10_root):
    root, *_ = cifar10_root
    path = root / "cifar-10-batches-py" / "data_batch_3"
    _pickle(path, {"data": _cifar_images(4, 99).reshape(4, -1), "labels": [0, 0, 0, 0]})
    with pytest.raises(DataNotFoundError, match="data_batch_3: md5 differs"):
        DATASETS.get("cifar10").load(root, False)


def test_cifar100_uses_fine_labels(cifar100_root):
    root, train_x, test_x = cifar100_root
    split = DATASETS.get("cifar100").load(root, False)
    assert split.train_y.tolist() == [99, 0, 5, 5, 42, 1, 2, 3] and split.test_y.tolist() == [7, 8, 9, 99]
    assert torch.equal(split.test_x, torch.from_numpy(test_x))
    assert len(split.classes) == 100 and split.classes[42] == "fine42"
    assert DATASETS.get("cifar100").num_classes == 100


# ---------------------------------------------------------------------------------------------------
# SVHN (.mat)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def svhn_root(tmp_path, monkeypatch):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    content = {}
    for split, n in (("train", 7), ("test", 5)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H x W x C x N, as SVHN ships it
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # digits 1..10, 10 meaning 0
        savemat(tmp_path / SVHN.split_list[split][1], {"X": x, "y": y})
        content[split] = (x, y)
    monkeypatch.setattr(
        SVHN,
        "split_list",
        {
            s: [url, f, md5(tmp_path / f) if (tmp_path / f).exists() else m]
            for s, (url, f, m) in SVHN.split_list.items()
        },
    )
    return tmp_path, content


def test_svhn_reads_mat_files_and_maps_label_10_to_0(svhn_root):
    root, content = svhn_root
    split = DATASETS.get("svhn").load(root, False)
    x, y = content["train"]
    assert split.train_x.shape == (7, 3, 32, 32)
    assert torch.equal(split.train_x, torch.from_numpy(np.transpose(x, (3, 2, 0, 1)).copy()))
    assert split.train_y.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert split.test_y.tolist() == [1, 2, 3, 4, 5]


def test_svhn_label_ten_becomes_zero(tmp_path, monkeypatch):
    from scipy.io import savemat

    for split in ("train", "test"):
        savemat(
            tmp_path / SVHN.split_list[split][1],
            {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[10], [3]], np.uint8)},
        )
    monkeypatch.setattr(
        SVHN,
        "split_list",
        {s: [u, f, md5(tmp_path / f) if s != "extra" else m] for s, (u, f, m) in SVHN.split_list.items()},
    )
    assert DATASETS.get("svhn").load(tmp_path, False).train_y.tolist() == [0, 3]


def test_svhn_missing_names_both_mat_files(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("svhn").load(tmp_path, False)
    assert str(tmp_path / "train_32x32.mat") in str(err.value) and str(tmp_path / "test_32x32.mat") in str(err.value)
    assert "ufldl.stanford.edu/housenumbers" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Tiny-ImageNet (official folder tree) and the ImageNet subsets (class-folder tree)
# ---------------------------------------------------------------------------------------------------


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=100)


COLOURS = {"n02": (200, 10, 10), "n01": (10, 200, 10), "n03": (10, 10, 200)}


@pytest.fixture
def tiny_root(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("n02\nn01\nn03\n")  # not sorted: the class order is the sorted one
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\nn99\tother\n")
    for wnid, colour in COLOURS.items():
        for i in range(2):
            _solid(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour)
    lines = []
    for i, wnid in enumerate(["n03", "n01", "n02", "n03"]):
        _solid(base / "val" / "images" / f"val_{i}.JPEG", COLOURS[wnid])
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _dominant_channel(x: torch.Tensor) -> list[int]:
    return x.float().mean((2, 3)).argmax(1).tolist()


def test_tiny_imagenet_sorted_wnids_and_val_annotations(tiny_root):
    info = DATASETS.get("tiny_imagenet")
    split = info.load(tiny_root, False)
    assert split.train_x.shape == (6, 3, 64, 64) and info.shape() == (3, 64, 64)
    assert split.classes == ("goldfish", "salamander", "bullfrog")  # n01, n02, n03
    assert split.train_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert _dominant_channel(split.train_x) == [1, 1, 0, 0, 2, 2]  # n01 green, n02 red, n03 blue
    assert split.test_y.tolist() == [2, 0, 1, 2]
    assert _dominant_channel(split.test_x) == [2, 1, 0, 2]
    assert info.mean == (0.485, 0.456, 0.406)


def test_tiny_imagenet_bad_annotation_and_missing_class_folder(tiny_root):
    base = tiny_root / "tiny-imagenet-200"
    ann = base / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DataNotFoundError, match=r"val_annotations.txt line 5: .*n77"):
        DATASETS.get("tiny_imagenet").load(tiny_root, False)
    for f in (base / "train" / "n03" / "images").iterdir():
        f.unlink()
    (base / "train" / "n03" / "images").rmdir()
    with pytest.raises(DataNotFoundError, match=r"missing: .*train/n03/images"):
        DATASETS.get("tiny_imagenet").load(tiny_root, False)


def test_tiny_imagenet_missing_lists_the_tree(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("tiny_imagenet").load(tmp_path, False)
    msg = str(err.value)
    for part in ["wnids.txt", "train", "val/images", "val/val_annotations.txt"]:
        assert str(tmp_path / "tiny-imagenet-200" / part) in msg
    assert "tiny-imagenet-200.zip" in msg


@pytest.fixture
def imagenet_root(tmp_path):
    """Imagenette's ten class folders in train and val (two non-square images each), one extra class."""
    wnids = [w for w, _ in IMAGENET_SUBSETS["imagenette"]]
    for split in ("train", "val"):
        for c, w in enumerate(wnids):
            for i in range(2):
                _solid(tmp_path / "imagenet" / split / w / f"{w}_{i}.JPEG", (c * 25, 0, 0), size=(200, 150))
        _solid(tmp_path / "imagenet" / split / "n09999999" / "x.JPEG", (255, 255, 255))
    return tmp_path


def test_imagenet_subset_in_mtt_class_order_at_128(imagenet_root):
    info = DATASETS.get("imagenette")
    split = info.load(imagenet_root, False)
    assert split.train_x.shape == (20, 3, 128, 128) and split.test_x.shape == (20, 3, 128, 128)
    assert split.train_y.tolist() == [c for c in range(10) for _ in range(2)]
    red = split.train_x[:, 0].float().mean((1, 2))
    assert torch.allclose(red, torch.tensor([c * 25.0 for c in range(10) for _ in range(2)]), atol=2)
    assert split.classes[0] == "tench" and split.classes[9] == "parachute"
    assert DATASETS.get("imagenette").load(imagenet_root, False, image_size=64).train_x.shape[-1] == 64


def test_imagenet_subset_missing_classes_are_listed(imagenet_root):
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("imagewoof").load(imagenet_root, False)
    msg = str(err.value)
    assert str(imagenet_root / "imagenet" / "train" / "n02096294") in msg  # Australian terrier
    assert "image-net.org" in msg


def test_an_undecodable_image_in_an_ind_dataset_is_an_error(imagenet_root):
    bad = imagenet_root / "imagenet" / "val" / "n03888257" / "broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageSourceError, match="broken.JPEG"):
        DATASETS.get("imagenette").load(imagenet_root, False)


def test_every_registered_dataset_has_consistent_constants():
    for name in DATASETS:
        info = DATASETS.get(name)
        assert info.source.hint, name
        if info.source.from_files:  # a user's own data: shape, classes, mean and std come from its files
            assert info.mean == info.std == () and name in ("imagefolder", "npy"), name
            continue
        assert len(info.mean) == len(info.std) == info.channels, name
    assert set(DATASETS.names()) >= {
        "mnist",
        "fashion_mnist",
        "svhn",
        "cifar10",
        "cifar100",
        "tiny_imagenet",
        "imagenette",
        "imagewoof",
        "imagefruit",
        "imageyellow",
        "imagemeow",
        "imagesquawk",
    }
