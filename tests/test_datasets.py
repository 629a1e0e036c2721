"""The InD dataset loaders, each on tiny files written here in the dataset's native format, offline."""

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cifar_images as _cifar_images
from conftest import md5
from conftest import write_pickle as _pickle
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, SVHN

from trustdd.data import datasets
from trustdd.data.datasets import DATASETS, IMAGENET_SUBSETS, DataNotFoundError
from trustdd.data.image_sources import ImageSourceError, SkippedImagesWarning

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


def assert_message(msg: str, head: str, *parts: str, absent: tuple[str, ...] = ()) -> None:
    """``msg`` starts with ``head``, holds every one of ``parts`` and none of ``absent``."""
    assert msg.startswith(head), msg
    for part in parts:
        assert part in msg, (part, msg)
    for part in absent:
        assert part not in msg, (part, msg)


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


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_download_hint_is_torchvisions_archive(name):
    """The hint is built without importing torchvision (a stage that reads no dataset does not pay its
    import), so its URL is written here: it must stay the one torchvision downloads."""
    source = DATASETS.get(name).source
    assert source.url == source.tv_class.url and source.url in source.hint


def test_the_stages_that_read_no_dataset_file_do_not_import_torchvision():
    """Importing torchvision takes seconds (its models pull in torch._dynamo): the params check, the
    experts, the distillation's and evaluation's modules import it only where a dataset is read."""
    code = "import sys, stages.check_params, stages.train_experts, stages.evaluate; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


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


# ---------------------------------------------------------------------------------------------------
# Files that are present but not the official ones (md5), and data.verify: false
# ---------------------------------------------------------------------------------------------------


def _change_batch(root: Path, name: str = "data_batch_3", labels=(0, 0, 0, 0)) -> tuple[Path, str, str]:
    """Rewrite one CIFAR-10 batch; returns (path, the official md5 torchvision expects, its new md5)."""
    path = root / "cifar-10-batches-py" / name
    official = dict(CIFAR10.train_list + CIFAR10.test_list)[name]
    _pickle(path, {"data": _cifar_images(len(labels), 99).reshape(len(labels), -1), "labels": list(labels)})
    return path, official, md5(path)


def test_a_changed_cifar_file_is_said_to_differ_not_to_be_missing(cifar10_root):
    root, *_ = cifar10_root
    path, official, actual = _change_batch(root)
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("cifar10").load(root, False)
    msg = str(err.value)
    assert isinstance(err.value, datasets.InvalidDataError)
    assert msg.startswith(
        f"dataset 'cifar10': 1 file(s) present but not the official ones (md5 differs) under data.root '{root}' "
        "(data.verify is true):\n"
    )
    assert f"  {path}: md5 differs from torchvision's {official}; this file's is {actual}\n" in msg
    assert "not found" not in msg and "data.verify: false" in msg


def test_missing_and_changed_cifar_files_headline_says_both(cifar10_root):
    root, *_ = cifar10_root
    path, official, actual = _change_batch(root)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("cifar10").load(root, False)
    assert_message(
        str(err.value),
        f"dataset 'cifar10': 1 file(s) missing and 1 file(s) present but not the official ones (md5 differs) "
        f"under data.root '{root}' and data.download is false:\n",
        f"missing: {root / 'cifar-10-batches-py' / 'test_batch'}",
        f"{path}: md5 differs from torchvision's {official}; this file's is {actual}",
        "cifar-10-python.tar.gz",
        "data.verify: false",
    )
    # data.verify: false does not make a missing file optional
    with pytest.raises(DataNotFoundError, match=r"files not found under data.root .*\n(.|\n)*missing: .*test_batch"):
        DATASETS.get("cifar10").load(root, False, verify=False)


def test_verify_false_warns_per_file_records_md5s_and_keeps_the_label_check(cifar10_root, capsys, monkeypatch):
    from trustdd.data.prepared import prepare

    root, train, test_x, names = cifar10_root
    path, official, actual = _change_batch(root, labels=(3, 1, 4, 1))
    info = DATASETS.get("cifar10")
    split = info.load(root, False, verify=False)
    warned = capsys.readouterr().err.splitlines()
    assert warned == [
        f"warning: dataset 'cifar10': data.verify is false, so a file that is not the official one is used: "
        f"{path}: md5 differs from torchvision's {official}; this file's is {actual}"
    ]
    assert split.train_y.tolist()[8:12] == [3, 1, 4, 1]  # the changed batch is read
    assert split.train_x.shape == (20, 3, 32, 32) and torch.equal(split.test_x, torch.from_numpy(test_x))
    base = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    assert split.checksums == {str(base / f): md5(base / f) for f in files}
    assert split.checksums[str(path)] == actual
    d = prepare(info, split, 0, torch.Generator()).to_dict()
    assert d["verified"] is False and d["checksums"] == split.checksums
    # the default keeps the file as it was: no verified/checksums keys
    _pickle(path, {"data": _cifar_images(4, 2).reshape(4, -1), "labels": [2, 3, 4, 5]})
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(base / n)] for n, _ in CIFAR10.train_list])
    d = prepare(info, info.load(root, False), 0, torch.Generator()).to_dict()
    assert "verified" not in d and "checksums" not in d and list(d) == [
        "dataset", "classes", "mean", "std", "train_x", "train_y", "test_x", "test_y"
    ]
    # still checked: a label outside the 10 classes
    _change_batch(root, labels=(0, 1, 2, 12))
    with pytest.raises(DataNotFoundError, match="train labels span 0..12, outside the 10 classes"):
        info.load(root, False, verify=False)


def test_verify_false_reads_a_changed_svhn_file_that_torchvision_would_refuse(svhn_root, capsys):
    from scipy.io import savemat

    root, content = svhn_root
    x = np.full((32, 32, 3, 2), 7, np.uint8)
    savemat(root / "test_32x32.mat", {"X": x, "y": np.array([[2], [10]], np.uint8)})
    with pytest.raises(datasets.InvalidDataError, match=r"test_32x32.mat: md5 differs from torchvision's"):
        DATASETS.get("svhn").load(root, False)
    split = DATASETS.get("svhn").load(root, False, verify=False)
    assert split.test_y.tolist() == [2, 0] and int(split.test_x.max()) == 7
    assert split.checksums[str(root / "test_32x32.mat")] == md5(root / "test_32x32.mat")
    assert "test_32x32.mat: md5 differs" in capsys.readouterr().err


def test_changed_idx_files_differ_and_verify_false_uses_them(fashion_root, tmp_path, monkeypatch, capsys):
    root, content = fashion_root
    info = DATASETS.get("fashion_mnist")
    monkeypatch.setattr(info.source, "search_dirs", [tmp_path / "no-debian"])
    expected = datasets.IDX_MD5["FashionMNIST"]["train-labels-idx1-ubyte"]
    raw = root / "FashionMNIST" / "raw"
    changed = _idx_bytes("labels", torch.full((20,), 9, dtype=torch.uint8))
    (raw / "train-labels-idx1-ubyte").write_bytes(changed)  # an unpacked copy, no official .gz either
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(changed)
    actual = hashlib.md5(changed).hexdigest()
    with pytest.raises(datasets.InvalidDataError) as err:
        info.load(root, False)
    msg = str(err.value)
    assert "2 file(s) present but not the official ones (md5 differs)" in msg and "not found" not in msg
    assert f"{raw / 'train-labels-idx1-ubyte'}: md5 differs from the expected {expected}; this file's is {actual}" in msg
    assert f"{raw / 'train-labels-idx1-ubyte.gz'}: content md5 differs from the expected {expected}" in msg
    split = info.load(root, False, verify=False)
    assert split.train_y.tolist() == [9] * 20 and torch.equal(split.train_x[:, 0], content["train-images-idx3-ubyte"])
    assert split.checksums[str(raw / "train-labels-idx1-ubyte")] == actual and len(split.checksums) == 4
    assert capsys.readouterr().err.count("warning: dataset 'fashion_mnist': data.verify is false") == 1


def test_mnist_gz_with_another_md5_is_unpacked_only_when_verify_is_false(tmp_path, monkeypatch, capsys):
    content = _idx_content()
    sums = _write_idx(tmp_path / "MNIST" / "raw", content)
    monkeypatch.setattr(MNIST, "resources", [(f"{n}.gz", "0" * 32 if "t10k" in n else sums[n][1]) for n in IDX_NAMES])
    info = DATASETS.get("mnist")
    with pytest.raises(datasets.InvalidDataError) as err:
        info.load(tmp_path, False)
    assert "2 file(s) present but not the official ones" in str(err.value)
    assert f"t10k-labels-idx1-ubyte.gz: md5 differs from torchvision's {'0' * 32}; this file's is {sums['t10k-labels-idx1-ubyte'][1]}" in str(err.value)
    split = info.load(tmp_path, False, verify=False)
    assert torch.equal(split.test_y, content["t10k-labels-idx1-ubyte"].long())
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_oe_torchvision_says_which_files_differ_and_which_are_missing(cifar100_root):
    from trustdd.data.image_sources import read_torchvision
    from trustdd.outliers.sources import OEConfig, PoolRequest, build_pool

    root, train_x, _ = cifar100_root
    base = root / "cifar-100-python"
    official = CIFAR100.train_list[0][1]
    _pickle(base / "train", {"data": train_x.reshape(8, -1), "fine_labels": [1] * 8, "coarse_labels": [0] * 8})
    (base / "meta").unlink()
    oe = OEConfig(format="torchvision", path=str(root), name="CIFAR100")
    req = PoolRequest(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), (), {}, 0, torch.Generator(), oe)
    with pytest.raises(ImageSourceError) as err:
        build_pool("oe", req)
    msg = str(err.value)
    assert_message(
        msg,
        f"outliers.oe: torchvision dataset CIFAR100 could not be loaded from root '{root}': 1 file(s) missing and "
        f"1 file(s) present but not the official ones (md5 differs) (outliers.oe.name 'CIFAR100', outliers.oe.path '{root}'):\n",
        f"  missing: {base / 'meta'}\n",
        f"  {base / 'train'}: md5 differs from torchvision's {official}; this file's is {md5(base / 'train')}\n",
        "set download: true (outliers.oe.download) on a machine with network",
        "data.verify does not apply here",
        "outliers.oe.format: npy or folder",
        absent=("Dataset not found or corrupted",),
    )
    # only changed: the headline says so, and names no missing file
    _pickle(base / "meta", {"fine_label_names": [], "coarse_label_names": []})
    with pytest.raises(ImageSourceError) as err:
        read_torchvision("CIFAR100", root, False, (3, 8, 8), 0, torch.Generator(), "outliers.oe")
    assert ": 2 file(s) present but not the official ones (md5 differs) (outliers.oe.name" in str(err.value)
    assert "missing" not in str(err.value)


def test_a_changed_file_of_an_ood_dataset_set(cifar100_root, capsys):
    from trustdd.data.ood_sets import DataFiles, build_ood_sets

    root, _, test_x = cifar100_root
    base = root / "cifar-100-python"
    _pickle(base / "test", {"data": test_x.reshape(4, -1), "fine_labels": [1, 2, 3, 4], "coarse_labels": [0] * 4})
    with pytest.raises(DataNotFoundError) as err:
        build_ood_sets(("cifar100",), (), {}, 4, (3, 32, 32), 0, "cifar10", DataFiles(root, False))
    msg = str(err.value)
    assert msg.startswith(
        f"ood.sets: 1 OOD set(s) with files present but not the official ones (md5 differs) under data.root '{root}'"
    )
    assert f"{base / 'test'}: md5 differs from torchvision's" in msg and "set data.verify: false" in msg
    sets = build_ood_sets(("cifar100",), (), {}, 4, (3, 32, 32), 0, "cifar10", DataFiles(root, False, verify=False))
    assert torch.equal(sets.images["cifar100"], torch.from_numpy(test_x))
    assert sets.report["cifar100"]["verified"] is False
    assert sets.report["cifar100"]["checksums"][str(base / "test")] == md5(base / "test")
    assert "md5 differs" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# A user's own data: imagefolder and npy
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path):
    """train/ and test/ with classes written in unsorted order, images of mixed non-square sizes, one
    grayscale PNG, one RGBA PNG and one file that does not decode."""
    root = tmp_path / "mine"
    colours = {"zebra": (200, 10, 10), "ant": (10, 200, 10), "moth": (10, 10, 200)}
    sizes = [(40, 30), (25, 60), (33, 33)]
    for split, n in (("train", 3), ("test", 2)):
        for name, colour in colours.items():
            for i in range(n):
                _solid(root / split / name / f"{i}.png", colour, size=sizes[i])
    Image.new("L", (50, 20), 77).save(root / "train" / "moth" / "gray.png")
    (root / "test" / "ant" / "sub").mkdir()
    Image.new("RGBA", (20, 30), (1, 2, 3, 0)).save(root / "test" / "ant" / "sub" / "rgba.png")
    (root / "train" / "zebra" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_imagefolder_sorted_classes_rgb_resized_and_undecodable_files_skipped(folder_root, capsys):
    from trustdd.data.prepared import prepare

    info = DATASETS.get("imagefolder").resolve(folder_root, 16)
    assert (info.channels, info.image_size, info.num_classes, info.shape(16)) == (3, 16, 3, (3, 16, 16))
    split = DATASETS.get("imagefolder").load(folder_root, False, image_size=16)
    assert split.classes == ("ant", "moth", "zebra")
    assert split.train_x.shape == (10, 3, 16, 16) and split.train_x.dtype == torch.uint8
    assert split.train_y.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]  # moth has gray.png too; broken.jpg left out
    assert _dominant_channel(split.train_x[[0, 3, 7]]) == [1, 2, 0]  # ant green, moth blue, zebra red
    gray = split.train_x[6]  # moth/gray.png, after 0.png 1.png 2.png
    assert gray.unique().tolist() == [77]  # a grayscale file becomes three equal channels
    assert split.test_x.shape == (7, 3, 16, 16) and split.test_y.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert split.test_x[2].flatten(1).median(1).values.tolist() == [1, 2, 3]  # ant/sub/rgba.png: alpha dropped
    assert split.skipped == ((str(folder_root / "train" / "zebra" / "broken.jpg"), split.skipped[0][1]),)
    err = capsys.readouterr().err
    assert "warning: dataset 'imagefolder' (train): skipped 1 of 11 image files" in err and "zebra/broken.jpg" in err
    prepared = prepare(info, split, 0, torch.Generator())
    x = split.train_x.double() / 255
    assert prepared.mean == tuple(round(float(v), 4) for v in x.mean((0, 2, 3)))
    assert prepared.std == tuple(round(float(v), 4) for v in x.transpose(0, 1).flatten(1).std(1, unbiased=False))
    d = prepared.to_dict()
    assert d["dataset"] == "imagefolder" and d["classes"] == ["ant", "moth", "zebra"]
    assert d["skipped"][0]["file"].endswith("broken.jpg") and "verified" not in d
    # the default's train_limit (12000) does not fit a small set of one's own: a params error, not a traceback
    from trustdd.params import ParamsError

    with pytest.raises(ParamsError, match=r"^params: data.train_limit: invalid value 12000; expected 0 \(the whole "
                       r"train set\) or at most 9: .* class 'ant' has 3 train images$"):
        prepare(info, split, 12000, torch.Generator())
    assert prepare(info, split, 9, torch.Generator()).train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_imagefolder_validation_lists_only_the_top_and_prepare_lists_each_folder_once(folder_root, monkeypatch):
    listed = []

    def counting(real):
        def listing(path="."):
            listed.append(Path(path).relative_to(folder_root).as_posix())
            return real(path)

        return listing

    monkeypatch.setattr(os, "scandir", counting(os.scandir))
    monkeypatch.setattr(os, "listdir", counting(os.listdir))
    classes = ("ant", "moth", "zebra")
    info = DATASETS.get("imagefolder").resolve(folder_root, 16)  # what every stage start does
    # train/ and test/, and each class folder up to its first image: test/ant/sub is not looked into
    assert sorted(listed) == sorted(["train", "test"] + [f"{s}/{c}" for s in ("train", "test") for c in classes])
    listed.clear()
    split = info.load(folder_root, False, image_size=16)  # prepare_data: the resolved entry, not resolved again
    assert sorted(listed) == sorted(
        ["train", "test"] + [f"{s}/{c}" for s in ("train", "test") for c in classes] + ["test/ant/sub"]
    )
    assert split.classes == classes and split.test_x.shape[0] == 7


def test_imagefolder_undecodable_files_are_warned_as_for_ood_folders(folder_root):
    source = DATASETS.get("imagefolder").source
    with pytest.warns(SkippedImagesWarning, match=r"^dataset 'imagefolder' \(train\): skipped 1 of 11 image files"):
        _, _, classes, skipped = source.read_splits(folder_root, 8)
    assert classes == ("ant", "moth", "zebra") and [f.name for f, _ in skipped] == ["broken.jpg"]


def test_imagefolder_image_size_is_a_params_mistake_not_a_file_problem(folder_root, tmp_path):
    for root in (folder_root, tmp_path / "nowhere"):
        with pytest.raises(ValueError, match=r"^data.image_size: invalid value 0; expected the side \(> 0\)") as err:
            DATASETS.get("imagefolder").resolve(root, 0)
        assert not isinstance(err.value, DataNotFoundError)


@pytest.mark.parametrize("dataset", ["npy", "imagefolder"])
def test_verify_false_records_nothing_for_a_dataset_without_md5s(dataset, folder_root, tmp_path):
    from trustdd.data.prepared import prepare

    root = _write_npy(tmp_path / "arr") if dataset == "npy" else folder_root
    info = DATASETS.get(dataset).resolve(root, 8)
    split = info.load(root, False, image_size=8, verify=False)
    assert split.checksums is None  # no file was checked: no "verified: false, checksums: {}"
    d = prepare(info, split, 0, torch.Generator()).to_dict()
    assert "verified" not in d and "checksums" not in d


def _class_dir(root: Path, split: str, name: str, n: int = 1) -> None:
    for i in range(n):
        _solid(root / split / name / f"{i}.png", (5, 5, 5), size=(8, 8))


@pytest.mark.parametrize(
    "make, image_size, pieces",
    [
        (lambda r: _class_dir(r, "test", "c"), 8,
         ["class folder(s) c of {root}/test are not in {root}/train"]),
        (lambda r: (r / "test" / "b").rename(r / "test" / "x"), 8,
         ["class folder(s) x of {root}/test are not in {root}/train"]),
        (lambda r: [f.unlink() for f in (r / "test" / "b").iterdir()], 8,
         ["class(es) b have no image files in {root}/test (e.g. {root}/test/b;", "every class needs test images"]),
        (lambda r: (r / "train" / "c").mkdir(), 8,
         ["class folder(s) c of {root}/train are missing from {root}/test"]),
        (lambda r: ((r / "train" / "c").mkdir(), _class_dir(r, "test", "c")), 8,
         ["class(es) c have no image files in {root}/train", "every class needs train images"]),
        (lambda r: _solid(r / "train" / "stray.png", (0, 0, 0)), 8,
         ["{root}/train holds 1 image file(s) outside class folders (e.g. stray.png)"]),
        (lambda r: [f.write_bytes(b"xx") for f in (r / "train" / "a").iterdir()], 8,
         ["class(es) a have no image in {root}/train that decodes"]),
    ],
    ids=["extra-test-class", "test-class-not-in-train", "class-missing-from-test",
         "empty-folder-missing-from-test", "empty-train-class", "loose-file", "nothing-decodes"],
)
def test_imagefolder_errors_name_the_folder_and_key(tmp_path, make, image_size, pieces):
    root = tmp_path / "mine"
    for split in ("train", "test"):
        for name in ("a", "b"):
            _class_dir(root, split, name, 2)
    make(root)
    with pytest.raises(datasets.InvalidDataError) as err:
        DATASETS.get("imagefolder").load(root, False, image_size=image_size)
    for piece in pieces:
        assert piece.format(root=root) in str(err.value)
    assert str(err.value).startswith("dataset 'imagefolder': data.")


def test_imagefolder_missing_split_lists_the_layout(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("imagefolder").resolve(tmp_path, 8)
    msg = str(err.value)
    assert msg.startswith(f"dataset 'imagefolder': files not found under data.root '{tmp_path}'.\n")
    assert f"missing: {tmp_path / 'test'} (a folder of class folders)" in msg
    assert "train/<class>/<image files> and test/<class>/<image files>" in msg and "data.download" not in msg


def _write_npy(root: Path, **arrays) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    default = {
        "x_train": rng.integers(0, 256, (6, 10, 10, 3), dtype=np.uint8),
        "y_train": np.array([2, 0, 1, 2, 1, 0]),
        "x_test": rng.integers(0, 256, (3, 10, 10, 3), dtype=np.uint8),
        "y_test": np.array([1, 0, 2], dtype=np.uint8),
    }
    for name, value in {**default, **arrays}.items():
        np.save(root / f"{name}.npy", value)
    return root


def test_npy_reads_arrays_labels_and_resizes(tmp_path):
    root = _write_npy(tmp_path / "arr")
    x_train = np.load(root / "x_train.npy")
    info = DATASETS.get("npy").resolve(root)
    assert (info.channels, info.image_size, info.num_classes, info.mean) == (3, 10, 3, ())
    split = DATASETS.get("npy").load(root, False)
    assert torch.equal(split.train_x, torch.from_numpy(x_train).permute(0, 3, 1, 2))
    assert split.train_y.tolist() == [2, 0, 1, 2, 1, 0] and split.train_y.dtype == torch.int64
    assert split.test_y.tolist() == [1, 0, 2] and split.classes == ("0", "1", "2")
    resized = DATASETS.get("npy").load(root, False, image_size=16)
    assert resized.train_x.shape == (6, 3, 16, 16) and resized.test_x.shape == (3, 3, 16, 16)
    gray = _write_npy(tmp_path / "gray", x_train=np.zeros((6, 7, 12, 1), np.uint8), x_test=np.ones((3, 5, 5, 1), np.uint8))
    assert DATASETS.get("npy").resolve(gray, 8).shape(8) == (1, 8, 8)
    assert DATASETS.get("npy").load(gray, False, image_size=8).test_x.unique().tolist() == [1]


@pytest.mark.parametrize(
    "arrays, image_size, pieces",
    [
        ({"y_train": np.array([0, 1, 2, 0, 1])}, 0,
         ["{root}/x_train.npy holds 6 images but {root}/y_train.npy 5 labels; expected one label per image"]),
        ({"y_train": np.array([0, 1, -1, 0, 1, 2])}, 0,
         ["{root}/y_train.npy' has the negative label -1 (at index 2)"]),
        ({"y_test": np.array([0.0, 1.0, 2.0])}, 0,
         ["{root}/y_test.npy' has dtype float64; expected a 1-D array of integer class labels 0..K-1"]),
        ({"y_test": np.array([[0], [1], [2]])}, 0, ["{root}/y_test.npy' has shape (3, 1)", "(save y.ravel())"]),
        ({"y_test": np.array([0, 1, 3])}, 0,
         ["{root}/y_test.npy has the label 3, a class with no train images ({root}/y_train.npy has labels 0..2)"]),
        ({"y_train": np.array([0, 3, 1, 3, 1, 0])}, 0,
         ["{root}/y_train.npy has no images of class(es) 2; the classes are 0..3"]),
        ({"y_test": np.array([0, 0, 2])}, 0, ["{root}/y_test.npy has no images of class(es) 1; every class needs test images"]),
        ({"x_train": np.zeros((6, 10, 10, 3), np.float32)}, 0,
         ["data.root: '{root}/x_train.npy' has dtype float32; expected uint8"]),
        ({"x_test": np.zeros((3, 10, 10), np.uint8)}, 0,
         ["data.root: '{root}/x_test.npy' has shape (3, 10, 10); expected N x H x W x C with C 1 or 3", "x[..., None]"]),
        ({"x_test": np.zeros((3, 10, 10, 1), np.uint8)}, 0,
         ["{root}/x_train.npy has 3 channel(s) but {root}/x_test.npy 1; expected the same in both"]),
        ({"x_train": np.zeros((6, 10, 12, 3), np.uint8)}, 0,
         ["data.image_size: invalid value 0 (keep the arrays' size), but the images are 10 x 12 in {root}/x_train.npy"]),
    ],
    ids=["lengths", "negative", "float-labels", "2d-labels", "test-label-out-of-range", "empty-class",
         "class-missing-from-test", "x-dtype", "x-ndim", "channels-differ", "not-square"],
)
def test_npy_errors_name_the_file_and_key(tmp_path, arrays, image_size, pieces):
    root = _write_npy(tmp_path / "arr", **arrays)
    with pytest.raises(datasets.InvalidDataError) as err:
        DATASETS.get("npy").resolve(root, image_size)
    for piece in pieces:
        assert piece.format(root=root) in str(err.value)
    assert str(err.value).startswith("dataset 'npy': data.")


def test_npy_missing_file_lists_all_four(tmp_path):
    root = _write_npy(tmp_path / "arr")
    (root / "y_test.npy").unlink()
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("npy").load(root, False)
    msg = str(err.value)
    assert msg.startswith(f"dataset 'npy': files not found under data.root '{root}'.\nExpected:\n")
    assert f"  {root / 'x_train.npy'}\n" in msg and f"  {root / 'y_test.npy'}\n" in msg
    assert "x_train.npy and x_test.npy (uint8 N x H x W x C, C 1 or 3)" in msg
