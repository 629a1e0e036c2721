import numpy as np
import pytest
import torch
from PIL import Image

from trustdd.data.datasets import DataNotFoundError
from trustdd.data.image_sources import ImageSourceError
from trustdd.data.ood import OODSets
from trustdd.data.ood_sets import OOD_SETS, DataFiles, UserOODSet, build_ood_sets
from trustdd.options import ParamsError

SHAPE = (1, 28, 28)
OFFLINE = [n for n in OOD_SETS.names() if OOD_SETS.get(n).problems is None]
CIFAR_PROTOCOL = ("cifar100", "tin", "mnist", "svhn", "dtd", "places365")


@pytest.mark.parametrize("name", OFFLINE)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_builtin_sets_are_seeded_uint8_of_the_ind_shape(name, shape):
    a = OOD_SETS.get(name).make(12, shape, torch.Generator().manual_seed(0), DataFiles())
    b = OOD_SETS.get(name).make(12, shape, torch.Generator().manual_seed(0), DataFiles())
    assert a.shape == (12, *shape) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert a.float().std() > 5  # real content, not a constant image


def test_builtin_groups_depend_on_the_ind_dataset():
    expected = {"mnist": "near", "textures": "far", "photos": "far", "gaussian_noise": "far", "uniform_noise": "far"}
    assert set(expected) <= set(OFFLINE)  # the offline sets of the default; others may be registered
    assert {n: OOD_SETS.get(n).group_for("fashion_mnist") for n in expected} == expected
    # OpenOOD v1.5's CIFAR-10 protocol: near = CIFAR-100, TinyImageNet; far = MNIST, SVHN, Textures, Places365
    assert {n: OOD_SETS.get(n).group_for("cifar10") for n in CIFAR_PROTOCOL} == {
        "cifar100": "near", "tin": "near", "mnist": "far", "svhn": "far", "dtd": "far", "places365": "far"
    }
    assert OOD_SETS.get("cifar10").group_for("cifar100") == "near"
    assert OOD_SETS.get("cifar100").same_as == ("cifar100",) and "tiny_imagenet" in OOD_SETS.get("tin").same_as


def _dtd(root, n_per_class=3):
    """DTD's layout: dtd/images/<category>/<category>_<id>.jpg, colour photos of varying size."""
    for k, category in enumerate(["banded", "dotted"]):
        for i in range(n_per_class):
            rgb = np.random.default_rng(10 * k + i).integers(0, 256, (50 + i, 60, 3), dtype=np.uint8)
            (root / "dtd" / "images" / category).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / "dtd" / "images" / category / f"{category}_{i:04d}.jpg")
    return root


def test_protocol_sets_read_from_data_root_in_the_ind_shape_and_groups(tmp_path, cifar100_root):
    root, _, test_x = cifar100_root
    _dtd(root)
    files = DataFiles(root, False)
    sets = build_ood_sets(("cifar100", "dtd"), (), {}, 4, (3, 32, 32), seed=0, dataset="cifar10", files=files)
    assert sets.images["dtd"].shape == (4, 3, 32, 32)  # capped: 4 of the 6 files, a seeded subset
    assert torch.equal(sets.images["cifar100"], torch.from_numpy(test_x))  # all 4 test images, in order
    assert sets.groups == {"cifar100": "near", "dtd": "far"}
    assert sets.report["dtd"]["source"] == f"files under {root}" and sets.report["dtd"]["images"] == 4
    again = build_ood_sets(("dtd",), (), {}, 4, (3, 32, 32), seed=0, dataset="cifar10", files=files)
    assert torch.equal(again.images["dtd"], sets.images["dtd"])
    gray = build_ood_sets(("cifar100", "dtd"), (), {}, 3, (1, 28, 28), seed=0, dataset="fashion_mnist", files=files)
    assert gray.images["cifar100"].shape == (3, 1, 28, 28) and gray.groups == {"cifar100": "far", "dtd": "far"}


def test_a_missing_protocol_set_is_named_before_anything_is_read(tmp_path, capsys):
    _dtd(tmp_path)
    files = DataFiles(tmp_path, False)
    with pytest.raises(DataNotFoundError) as err:
        build_ood_sets(("dtd", "places365", "svhn"), (), {}, 4, (3, 32, 32), 0, "cifar10", files)
    msg = str(err.value)
    assert msg.startswith(f"ood.sets: 2 OOD set(s) with files missing under data.root '{tmp_path}':\n")
    assert "places365:" in msg and "svhn:" in msg and "dtd:" not in msg
    assert str(tmp_path / "places365" / "val_256") in msg and str(tmp_path / "test_32x32.mat") in msg
    assert "ood.optional" in msg
    sets = build_ood_sets(("dtd", "places365", "svhn"), (), {}, 4, (3, 32, 32), 0, "cifar10", files,
                          optional=("places365", "svhn"))
    assert list(sets.images) == ["dtd"]
    assert sets.report["places365"]["images"] == 0 and "missing" in sets.report["places365"]["skipped_set"]
    assert "warning: ood.sets: optional set 'svhn' skipped" in capsys.readouterr().err


def test_a_set_drawn_from_the_ind_dataset_is_refused():
    with pytest.raises(ParamsError, match="ood.sets: invalid value 'cifar10'; expected sets other than 'cifar10', which is drawn from the InD dataset 'cifar10'"):
        build_ood_sets(("cifar10",), (), {}, 4, (3, 32, 32), 0, "cifar10", DataFiles())


def _folder(root, n_good=5, broken=()):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        sub = root / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 30, 3), 20 * i, np.uint8)).save(sub / f"img{i}.png")
    for name in broken:
        (root / name).write_bytes(b"not an image")
    return root


def test_user_folder_with_an_unreadable_file_is_read_and_the_file_reported(tmp_path, capsys):
    root = _folder(tmp_path / "mine", n_good=5, broken=["zz_broken.jpg"])
    user = (UserOODSet(name="mine", format="folder", path=str(root), group="near"),)
    sets = build_ood_sets(("uniform_noise",), user, {}, 100, SHAPE, seed=0)
    assert sets.images["mine"].shape == (5, *SHAPE) and sets.images["mine"].dtype == torch.uint8
    assert sets.groups == {"uniform_noise": "far", "mine": "near"}
    report = sets.report["mine"]
    assert report["images"] == 5 and report["group"] == "near"
    assert [s["file"] for s in report["skipped"]] == [str(root / "zz_broken.jpg")]
    assert "warning: ood.user[0].path: skipped 1 of 6 image files" in capsys.readouterr().err


def test_user_folder_is_capped_with_a_seeded_subset(tmp_path):
    root = _folder(tmp_path / "mine", n_good=9)
    user = (UserOODSet(name="mine", path=str(root)),)
    a = build_ood_sets((), user, {}, 4, SHAPE, seed=3).images["mine"]
    b = build_ood_sets((), user, {}, 4, SHAPE, seed=3).images["mine"]
    assert a.shape[0] == 4 and torch.equal(a, b)


def test_empty_folder_and_missing_path_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    empty = (UserOODSet(name="e", path=str(tmp_path / "empty")),)
    with pytest.raises(ImageSourceError, match=r"ood.user\[0\].path: no image files found under"):
        build_ood_sets(("mnist",), empty, {}, 10, SHAPE, seed=0)
    missing = (UserOODSet(name="m", format="npy", path=str(tmp_path / "nope.npy")),)
    with pytest.raises(ImageSourceError, match=r"ood.user\[0\].path: .*nope.npy' does not exist"):
        build_ood_sets(("mnist",), missing, {}, 10, SHAPE, seed=0)


def test_optional_missing_set_is_skipped_and_reported(tmp_path, capsys):
    user = (UserOODSet(name="later", path=str(tmp_path / "not_yet"), optional=True),)
    sets = build_ood_sets(("uniform_noise",), user, {}, 10, SHAPE, seed=0)
    assert list(sets.images) == ["uniform_noise"]
    assert sets.report["later"]["images"] == 0 and "does not exist" in sets.report["later"]["skipped_set"]
    assert "warning: ood.user[0]: optional set 'later' skipped" in capsys.readouterr().err


def test_skipped_sets_travel_with_the_artefact_to_evaluation(tmp_path):
    user = (UserOODSet(name="later", path=str(tmp_path / "not_yet"), optional=True),)
    sets = build_ood_sets(("uniform_noise",), user, {}, 10, SHAPE, seed=0)
    assert sets.skipped == {"later": f"{str(tmp_path / 'not_yet')!r} does not exist"}
    again = OODSets.from_dict(sets.to_dict())
    assert again.skipped == sets.skipped and list(again.images) == ["uniform_noise"]
    plain = build_ood_sets(("uniform_noise",), (), {}, 10, SHAPE, seed=0)
    assert "skipped" not in plain.to_dict() and OODSets.from_dict(plain.to_dict()).skipped == {}


def test_user_npy_is_converted_and_group_overrides_apply(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8))
    user = (UserOODSet(name="arr", format="npy", path=str(tmp_path / "x.npy")),)
    sets = build_ood_sets(("mnist",), user, {"mnist": "far", "arr": "near"}, 50, SHAPE, seed=0)
    assert sets.images["arr"].shape == (7, *SHAPE)
    assert sets.groups == {"mnist": "far", "arr": "near"}


def test_round_trip_and_preview():
    sets = OODSets(
        {"a": torch.full((3, *SHAPE), 255, dtype=torch.uint8), "b": torch.zeros(0, *SHAPE, dtype=torch.uint8)},
        {"a": "far"},
    )
    again = OODSets.from_dict(sets.to_dict())
    assert again.groups == {"a": "far"} and torch.equal(again.images["a"], sets.images["a"])
    grid = sets.preview(per_set=4)  # one row for "a" (3 images + 1 black); the empty set has no row
    assert grid.shape == (4, *SHAPE)
    assert grid[:3].eq(1).all() and grid[3].eq(0).all()


def test_ood_sets_for_a_users_own_ind_data_take_its_resolved_shape(tmp_path, cifar100_root):
    from trustdd.data.datasets import DATASETS

    root, _, test_x = cifar100_root
    for split, n in (("train", 2), ("test", 1)):
        for name in ("b", "a"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (30, 18), (9, 9, 9)).save(root / split / name / f"{i}.png")
    shape = DATASETS.get("imagefolder").resolve(root, 20).shape(20)
    assert shape == (3, 20, 20)
    user = (UserOODSet(name="mine", path=str(root / "test")),)
    sets = build_ood_sets(("mnist", "cifar100"), user, {}, 3, shape, 0, "imagefolder", DataFiles(root, False))
    assert {k: tuple(v.shape) for k, v in sets.images.items()} == {
        "mnist": (3, 3, 20, 20), "cifar100": (3, 3, 20, 20), "mine": (2, 3, 20, 20)
    }
    assert sets.groups == {"mnist": "far", "cifar100": "far"}  # no set is the InD data, none is refused
    gray = build_ood_sets(("textures",), (), {}, 2, (1, 12, 12), 0, "npy", DataFiles(root, False))
    assert gray.images["textures"].shape == (2, 1, 12, 12)
