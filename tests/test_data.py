import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import torch

from trustdd import data
from trustdd.data import DATASETS, DataNotFoundError, fit_images, stratified_subset

RAW_NAMES = {
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


@pytest.fixture
def tiny_idx(tmp_path, monkeypatch):
    """Fashion-MNIST-format IDX .gz files with 20 train / 10 test images, registered under their md5s."""
    g = torch.Generator().manual_seed(0)
    content = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (20, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(20, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (10, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": torch.arange(10, dtype=torch.uint8).flip(0),
    }
    source = tmp_path / "source"
    source.mkdir()
    md5s = {}
    for name, array in content.items():
        raw = _idx_bytes(RAW_NAMES[name], array)
        md5s[name] = hashlib.md5(raw).hexdigest()
        with gzip.open(source / f"{name}.gz", "wb") as f:
            f.write(raw)
    monkeypatch.setitem(data.IDX_MD5, "FashionMNIST", md5s)
    return source, content


def _install(source: Path, root: Path) -> Path:
    """Copy the .gz files into torchvision's ROOT/FashionMNIST/raw layout; return that folder."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in source.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    return raw


def test_idx_reader_returns_the_written_images(tiny_idx, tmp_path):
    source, content = tiny_idx
    _install(source, tmp_path / "root")
    split = DATASETS.get("fashion_mnist").load(tmp_path / "root", False)
    assert split.train_x.shape == (20, 1, 28, 28) and split.train_x.dtype == torch.uint8
    assert torch.equal(split.train_x[:, 0], content["train-images-idx3-ubyte"])
    assert torch.equal(split.test_y, content["t10k-labels-idx1-ubyte"].long())


def test_missing_files_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setitem(data.IDX_SEARCH_DIRS, "FashionMNIST", [tmp_path / "no-debian"])
    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("fashion_mnist").load(tmp_path / "empty", False)
    msg = str(err.value)
    assert str(tmp_path / "empty" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz") in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data.download" in msg
    assert str(tmp_path / "no-debian") in msg


def test_a_corrupt_file_is_rejected_by_checksum(tiny_idx, tmp_path):
    source, _ = tiny_idx
    raw = _install(source, tmp_path / "root")
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes("labels", torch.zeros(20, dtype=torch.uint8)))
    with pytest.raises(DataNotFoundError, match="content md5 differs"):
        DATASETS.get("fashion_mnist").load(tmp_path / "root", False)


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    split = DATASETS.get("fashion_mnist").load(tmp_path, False)
    assert split.train_x.shape == (60000, 1, 28, 28)
    assert split.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(split.train_y).tolist() == [6000] * 10
    assert torch.bincount(split.test_y).tolist() == [1000] * 10


def test_stratified_subset_is_balanced_and_seeded():
    labels = torch.arange(100) % 4
    a = stratified_subset(labels, 5, torch.Generator().manual_seed(0))
    b = stratified_subset(labels, 5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="fewer than the 30"):
        stratified_subset(labels, 30, torch.Generator())


def test_stratified_subset_takes_a_count_per_class():
    labels = torch.arange(100) % 4
    pick = stratified_subset(labels, [1, 0, 3], torch.Generator().manual_seed(0))  # class 3: past the list, none
    assert labels[pick].tolist() == [0, 2, 2, 2]
    same = stratified_subset(labels, [5, 5, 5, 5], torch.Generator().manual_seed(0))
    assert torch.equal(same, stratified_subset(labels, 5, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="class 1 has 25 images, fewer than the 26 asked for"):
        stratified_subset(labels, [0, 26], torch.Generator())


def test_fit_images_converts_channels_and_size():
    rgb = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    assert fit_images(rgb, (1, 28, 28)).shape == (2, 1, 28, 28)
    gray = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8)
    assert fit_images(gray, (3, 32, 32)).shape == (2, 3, 32, 32)
