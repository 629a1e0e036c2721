"""The native-format files of tests/native_files.py are read by the project's own readers: shapes, counts,
label order, class names, and ``Source.train_count``; every preset's data root builds (no DVC, no training)."""

import pickle

import numpy as np
import pytest
import torch
import yaml
from native_files import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE,
    CIFAR100_SUPERCLASSES,
    FILELESS_OOD,
    GRAY_EVERY,
    PRESETS,
    class_colour,
    tiny_wnids,
    write_cifar10,
    write_cifar100,
    write_dtd,
    write_imagenet_resize,
    write_imagenet_subset,
    write_isun,
    write_lsun_crop,
    write_lsun_resize,
    write_oe_300k,
    write_places365,
    write_research_root,
    write_svhn,
    write_tiny_imagenet,
)
from PIL import Image
from scipy.io import loadmat

from trustdd.data.datasets import DATASETS, IMAGENET_SUBSETS
from trustdd.data.ood_sets import OOD_SETS, DataFiles, build_ood_sets
from trustdd.outliers.sources import OEConfig, PoolRequest, build_pool


def load(name, root, size=0):
    return DATASETS.get(name).load(root, False, size, verify=False)  # the md5s are not the official ones


def assert_labels_follow_images(x: torch.Tensor, y: torch.Tensor) -> int:
    """Each colour image's mean colour is its label's (native_files.class_colour); grayscale images
    (R == G == B exactly) come back as 3 equal channels. Returns how many were grayscale."""
    gray = (x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)
    means = x[~gray].double().mean((2, 3))
    colours = torch.from_numpy(class_colour(np.arange(int(y.max()) + 1)))
    assert torch.cdist(means, colours).argmin(1).tolist() == y[~gray].tolist()  # nearest class colour: the label's
    assert torch.allclose(means, colours[y[~gray]], atol=12)
    return int(gray.sum())


def test_cifar10_batches_are_read_exactly_with_the_official_keys(tmp_path, capsys):
    w = write_cifar10(tmp_path, train_per_class=3, test_per_class=2, seed=1)
    base = tmp_path / "cifar-10-batches-py"
    names = sorted(p.name for p in base.iterdir())
    assert names == ["batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    with open(base / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (6, 3072)
    assert batch["batch_label"] == "training batch 1 of 5"

    s = load("cifar10", tmp_path)
    assert "data.verify is false" in capsys.readouterr().err  # each file warned about
    assert s.train_x.shape == (30, 3, 32, 32) and s.test_x.shape == (20, 3, 32, 32)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert torch.equal(s.train_x, torch.from_numpy(w.train_x)) and torch.equal(s.test_x, torch.from_numpy(w.test_x))
    assert s.train_y.tolist() == w.train_y.tolist() and s.test_y.tolist() == w.test_y.tolist()
    assert torch.bincount(s.train_y).tolist() == [3] * 10
    assert s.classes == CIFAR10_CLASSES == w.classes
    assert len(s.checksums) == 7  # data.verify false: the md5s of the 7 files read are recorded
    assert DATASETS.get("cifar10").source.train_count(tmp_path) == 30


def test_cifar100_fine_and_coarse_labels_and_names(tmp_path):
    w = write_cifar100(tmp_path, train_per_class=2, test_per_class=1, seed=2)
    s = load("cifar100", tmp_path)
    assert s.train_x.shape == (200, 3, 32, 32) and s.test_x.shape == (100, 3, 32, 32)
    assert torch.equal(s.train_x, torch.from_numpy(w.train_x)) and s.test_y.tolist() == w.test_y.tolist()
    assert torch.bincount(s.train_y, minlength=100).tolist() == [2] * 100
    assert len(s.classes) == 100 and s.classes[:3] == ("apple", "aquarium_fish", "baby") and s.classes[-1] == "worm"
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")
    with open(tmp_path / "cifar-100-python" / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta["coarse_label_names"] == list(CIFAR100_COARSE) and len(CIFAR100_COARSE) == 20
    for fine, coarse in zip(train["fine_labels"], train["coarse_labels"]):
        assert s.classes[fine] in CIFAR100_SUPERCLASSES[meta["coarse_label_names"][coarse]]
    assert DATASETS.get("cifar100").source.train_count(tmp_path) == 200


def test_cifar100_at_50_per_class_is_quick_and_enough_for_ipc50(tmp_path):
    w = write_cifar100(tmp_path, train_per_class=50, test_per_class=1)
    assert DATASETS.get("cifar100").source.train_count(tmp_path) == 5000 == w.train_count
    assert int(torch.bincount(load("cifar100", tmp_path).train_y).min()) == 50


def test_svhn_mat_files_map_label_10_to_digit_0(tmp_path):
    w = write_svhn(tmp_path, train_per_class=4, test_per_class=2, seed=3)
    mat = loadmat(tmp_path / "train_32x32.mat")
    assert mat["X"].shape == (32, 32, 3, 40) and mat["X"].dtype == np.uint8 and mat["y"].shape == (40, 1)
    assert sorted(set(mat["y"].ravel().tolist())) == list(range(1, 11))  # 10 is the digit 0, no 0 in the file
    s = load("svhn", tmp_path)
    assert s.train_x.shape == (40, 3, 32, 32) and s.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(s.train_x, torch.from_numpy(w.train_x)) and torch.equal(s.test_x, torch.from_numpy(w.test_x))
    assert s.train_y.tolist() == np.where(mat["y"].ravel() == 10, 0, mat["y"].ravel()).tolist() == w.train_y.tolist()
    assert s.classes == tuple("0123456789")
    assert DATASETS.get("svhn").source.train_count(tmp_path) == 40


def test_tiny_imagenet_tree_sorted_wnids_and_val_labels_from_the_annotations(tmp_path):
    w = write_tiny_imagenet(tmp_path, train_per_class=2, val_per_class=1, test_images=3, seed=4)
    base = tmp_path / "tiny-imagenet-200"
    listed = (base / "wnids.txt").read_text().split()
    assert listed == tiny_wnids(4) and len(set(listed)) == 200 and listed != sorted(listed)
    wnid = sorted(listed)[7]
    assert sorted(p.name for p in (base / "train" / wnid).iterdir()) == ["images", f"{wnid}_boxes.txt"]
    assert (base / "train" / wnid / f"{wnid}_boxes.txt").read_text().count("\n") == 2
    assert len(list((base / "test" / "images").iterdir())) == 3
    rows = [line.split("\t") for line in (base / "val" / "val_annotations.txt").read_text().splitlines()]
    assert len(rows) == 200 and all(len(r) == 6 for r in rows)

    s = load("tiny_imagenet", tmp_path)
    assert s.train_x.shape == (400, 3, 64, 64) and s.test_x.shape == (200, 3, 64, 64)
    assert s.train_y.tolist() == np.repeat(np.arange(200), 2).tolist()  # sorted wnid order
    assert s.test_y.tolist() == [sorted(listed).index(r[1]) for r in rows] == w.test_y.tolist()
    assert s.test_y.tolist() != sorted(s.test_y.tolist())  # val classes are shuffled, as in the real archive
    assert s.classes == w.classes and s.classes[7] == "tiny class 7"  # words.txt's first name of each wnid
    assert_labels_follow_images(s.train_x, s.train_y)
    assert assert_labels_follow_images(s.test_x, s.test_y) == 200 // GRAY_EVERY
    assert DATASETS.get("tiny_imagenet").source.train_count(tmp_path) == 400


@pytest.mark.parametrize("subset", ["imagenette", "imagewoof"])
def test_imagenet_subset_reads_its_wnid_folders_resized_to_128(tmp_path, subset):
    w = write_imagenet_subset(tmp_path, subset, train_per_class=GRAY_EVERY, val_per_class=1, seed=5)
    wnids, names = zip(*IMAGENET_SUBSETS[subset])
    assert sorted(p.name for p in (tmp_path / "imagenet" / "train").iterdir()) == sorted(wnids)
    with Image.open(next((tmp_path / "imagenet" / "train" / wnids[0]).iterdir())) as im:
        assert im.size[0] != im.size[1]
    s = load(subset, tmp_path)
    assert s.train_x.shape == (10 * GRAY_EVERY, 3, 128, 128) and s.test_x.shape == (10, 3, 128, 128)
    assert s.train_y.tolist() == np.repeat(np.arange(10), GRAY_EVERY).tolist() and s.test_y.tolist() == list(range(10))
    assert s.classes == names == w.classes
    assert assert_labels_follow_images(s.train_x, s.train_y) == 10  # one grayscale image per class
    assert_labels_follow_images(s.test_x, s.test_y)
    assert DATASETS.get(subset).source.train_count(tmp_path) == 10 * GRAY_EVERY == w.train_count
    small = load(subset, tmp_path, size=32)
    assert small.train_x.shape == (10 * GRAY_EVERY, 3, 32, 32)


FOLDER_SETS = {  # set -> (writer(root, n), the folder its images go to)
    "dtd": (lambda root, n: write_dtd(root, per_category=2, categories=("banded", "braided")), "dtd/images"),
    "places365": (write_places365, "places365/val_256"),
    "lsun_crop": (write_lsun_crop, "LSUN/test"),
    "lsun_resize": (write_lsun_resize, "LSUN_resize/LSUN_resize"),
    "isun": (write_isun, "iSUN/iSUN_patches"),
    "tin_resize": (write_imagenet_resize, "Imagenet_resize/Imagenet_resize"),
}


@pytest.mark.parametrize("name", sorted(FOLDER_SETS))
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64)])
def test_ood_folder_sets_come_out_uint8_at_the_ind_shape(tmp_path, name, shape):
    write, folder = FOLDER_SETS[name]
    files = DataFiles(tmp_path)
    assert OOD_SETS.get(name).problems(files)  # nothing there yet
    written = write(tmp_path, 5)
    assert written == len(list((tmp_path / folder).rglob("*.*g")))
    assert OOD_SETS.get(name).problems(files) == []
    x = OOD_SETS.get(name).make(3, shape, torch.Generator().manual_seed(0), files)
    assert x.shape == (3, *shape) and x.dtype == torch.uint8 and x.float().std() > 10
    assert OOD_SETS.get(name).make(100, shape, torch.Generator(), files).shape[0] == written  # capped at what is there


def test_odin_archive_sizes_and_places_size(tmp_path):
    write_lsun_crop(tmp_path, 1)
    write_isun(tmp_path, 1)
    write_places365(tmp_path, 1)
    sizes = {}
    for f in tmp_path.rglob("*.*g"):
        with Image.open(f) as im:
            sizes[f.relative_to(tmp_path).parts[0]] = im.size
    assert sizes == {"LSUN": (36, 36), "iSUN": (32, 32), "places365": (256, 256)}


def test_tin_and_dataset_backed_ood_sets(tmp_path):
    write_tiny_imagenet(tmp_path, 1, 1, 1)
    write_svhn(tmp_path, 1, 2)
    write_cifar100(tmp_path, 1, 1)
    sets = build_ood_sets(("tin", "svhn", "cifar100"), (), {}, 50, (3, 32, 32), 0, "cifar10", DataFiles(tmp_path, verify=False))
    assert {k: tuple(v.shape) for k, v in sets.images.items()} == {
        "tin": (50, 3, 32, 32), "svhn": (20, 3, 32, 32), "cifar100": (50, 3, 32, 32)
    }
    assert sets.groups == {"tin": "near", "svhn": "far", "cifar100": "near"}
    assert sets.report["svhn"]["verified"] is False and len(sets.report["svhn"]["checksums"]) == 2


def test_oe_300k_npy_is_read_as_real_outliers(tmp_path):
    path = write_oe_300k(tmp_path, n=20)
    arr = np.load(path)
    assert path.name == "300K_random_images.npy" and arr.shape == (20, 32, 32, 3) and arr.dtype == np.uint8
    req = PoolRequest(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), (), {}, 0, torch.Generator(),
                      OEConfig(format="npy", path=str(path), max_images=8))
    pool = build_pool("oe", req)
    assert pool.x.shape == (8, 3, 64, 64) and pool.x.dtype == torch.uint8 and pool.kinds == ("oe",)


PRESET_CASES = {  # one preset per InD dataset; per_class None = the preset's default (ipc, at least 10)
    "cifar10-ipc10": None,
    "cifar100-ipc50": None,
    "tiny-ipc1": 1,
    "imagenette-ipc1": 2,
}


@pytest.mark.parametrize("preset", sorted(PRESET_CASES))
def test_research_root_holds_everything_a_preset_reads(tmp_path, preset):
    p = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
    written = write_research_root(tmp_path, preset, per_class=PRESET_CASES[preset], ood_images=6, oe_images=10)
    info = DATASETS.get(p["dataset"])
    per_class = PRESET_CASES[preset] or max(p["ipc"], 10)
    assert info.source.train_count(tmp_path) == info.num_classes * per_class == written[p["dataset"]].train_count
    file_sets = tuple(s for s in p["ood"]["sets"] if s not in FILELESS_OOD)
    assert set(written) == {p["dataset"], *file_sets, "oe"}
    shape = info.shape()
    sets = build_ood_sets(file_sets, (), {}, 6, shape, 0, p["dataset"], DataFiles(tmp_path, verify=False),
                          tuple(p["ood"]["optional"]))
    assert sets.skipped == {}  # the optional ODIN sets are there too
    assert {k: tuple(v.shape[1:]) for k, v in sets.images.items()} == {s: shape for s in file_sets}
    assert all(v.shape[0] >= 1 and v.dtype == torch.uint8 for v in sets.images.values())
    s = info.load(tmp_path, False, 0, verify=False)
    assert s.train_x.shape == (info.num_classes * per_class, *shape)
    assert int(torch.bincount(s.train_y, minlength=info.num_classes).min()) >= p["ipc"]
