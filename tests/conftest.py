import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR100


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=[(1, 28, 28), (3, 32, 32), (3, 30, 45)], ids=["gray28", "rgb32", "rgb30x45"])
def images(request):
    """A batch of smooth, non-constant [0, 1] images of several shapes."""
    c, h, w = request.param
    g = torch.Generator().manual_seed(7)
    x = torch.rand(6, c, h, w, generator=g)
    return (x + torch.linspace(0, 1, w).view(1, 1, 1, w)) / 2


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    """CIFAR-100 as torchvision reads it: 8 train and 4 test images with fine labels, and the class names."""
    base = tmp_path / "cifar-100-python"
    train_x, test_x = cifar_images(8, 1), cifar_images(4, 2)
    train_labels = [99, 0, 5, 5, 42, 1, 2, 3]
    write_pickle(
        base / "train", {"data": train_x.reshape(8, -1), "fine_labels": train_labels, "coarse_labels": [0] * 8}
    )
    write_pickle(base / "test", {"data": test_x.reshape(4, -1), "fine_labels": [7, 8, 9, 99], "coarse_labels": [0] * 4})
    write_pickle(base / "meta", {"fine_label_names": [f"fine{c:02d}" for c in range(100)], "coarse_label_names": []})
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5(base / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5(base / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5(base / "meta")})
    return tmp_path, train_x, test_x
