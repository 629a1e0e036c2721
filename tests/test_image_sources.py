import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR100, SVHN, FakeData, Places365

from trustdd.data import image_sources, ood_sets
from trustdd.data.image_sources import (
    EMBEDDED_OE_IMAGES,
    ImageSourceError,
    SkippedImagesWarning,
    embedded_pool,
    fit_pil,
    read_folder,
    read_npy,
    read_torchvision,
)

KEY = "outliers.oe.path"


def _seed(s: int) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def _expected_pick(n: int, k: int, seed: int) -> list[int]:
    return sorted(torch.randperm(n, generator=_seed(seed))[:k].tolist())


def _constant_npy(path, n=20, h=8, w=8, c=3):
    """Image i is constant with value 10 * i, so every output image says which input it came from."""
    x = (np.arange(n, dtype=np.uint8) * 10)[:, None, None, None] * np.ones((1, h, w, c), np.uint8)
    np.save(path, x)
    return path


# ---------------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------------


def test_npy_reads_all_and_resizes(tmp_path):
    out = read_npy(_constant_npy(tmp_path / "x.npy"), (3, 16, 12), 0, _seed(0), KEY)
    assert out.dtype == torch.uint8 and out.shape == (20, 3, 16, 12)
    assert out[:, 0, 0, 0].tolist() == [10 * i for i in range(20)]
    assert bool((out == out[:, :1, :1, :1]).all())  # constant images stay constant


def test_npy_gray_to_rgb_copies_the_channel(tmp_path):
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    np.save(tmp_path / "g.npy", x)
    out = read_npy(tmp_path / "g.npy", (3, 4, 4), 0, _seed(0), KEY)
    assert out.shape == (2, 3, 4, 4)
    assert out[1, :, 2, 3].tolist() == [x[1, 2, 3, 0]] * 3 == [27] * 3


def test_npy_rgb_to_gray_uses_luma(tmp_path):
    x = np.zeros((1, 4, 4, 3), np.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 200, 100, 50
    np.save(tmp_path / "c.npy", x)
    out = read_npy(tmp_path / "c.npy", (1, 4, 4), 0, _seed(0), KEY)
    assert out.shape == (1, 1, 4, 4)
    assert set(out.flatten().tolist()) == {124}  # 0.2989 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2


def test_npy_subsample_is_seeded_and_sorted(tmp_path):
    path = _constant_npy(tmp_path / "x.npy")
    a = read_npy(path, (3, 8, 8), 5, _seed(3), KEY)
    assert a[:, 0, 0, 0].tolist() == [10 * i for i in _expected_pick(20, 5, 3)]
    assert torch.equal(a, read_npy(path, (3, 8, 8), 5, _seed(3), KEY))
    assert not torch.equal(a, read_npy(path, (3, 8, 8), 5, _seed(4), KEY))
    assert read_npy(path, (3, 8, 8), 20, _seed(3), KEY)[:, 0, 0, 0].tolist() == [10 * i for i in range(20)]


def test_npy_chunks_give_the_same_result(tmp_path, monkeypatch):
    path = _constant_npy(tmp_path / "x.npy")
    whole, sub = read_npy(path, (1, 5, 5), 0, _seed(1), KEY), read_npy(path, (1, 5, 5), 7, _seed(1), KEY)
    monkeypatch.setattr(image_sources, "CHUNK", 3)
    assert torch.equal(whole, read_npy(path, (1, 5, 5), 0, _seed(1), KEY))
    assert torch.equal(sub, read_npy(path, (1, 5, 5), 7, _seed(1), KEY))


@pytest.mark.parametrize(
    "array, needles",
    [
        (np.zeros((2, 4, 4, 3), np.float32), ["dtype float32", "expected uint8"]),
        (np.zeros((2, 4, 4), np.uint8), ["shape (2, 4, 4)", "N x H x W x C with C 1 or 3", "x[..., None]"]),
        (np.zeros((2, 4, 4, 4), np.uint8), ["shape (2, 4, 4, 4)", "N x H x W x C with C 1 or 3"]),
        (np.zeros((0, 4, 4, 3), np.uint8), ["holds no images", "(0, 4, 4, 3)"]),
    ],
    ids=["dtype", "ndim", "channels", "empty"],
)
def test_npy_bad_content(tmp_path, array, needles):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ImageSourceError) as e:
        read_npy(tmp_path / "bad.npy", (3, 8, 8), 0, _seed(0), KEY)
    for needle in [KEY, "bad.npy"] + needles:
        assert needle in str(e.value)


def test_npy_missing_invalid_or_directory(tmp_path):
    with pytest.raises(ImageSourceError, match=rf"^{KEY}: '.*nope\.npy' does not exist"):
        read_npy(tmp_path / "nope.npy", (3, 8, 8), 0, _seed(0), KEY)
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    with pytest.raises(ImageSourceError, match=rf"^{KEY}: '.*junk\.npy' is not a valid \.npy file"):
        read_npy(tmp_path / "junk.npy", (3, 8, 8), 0, _seed(0), KEY)
    with pytest.raises(ImageSourceError, match="is a directory"):
        read_npy(tmp_path, (3, 8, 8), 0, _seed(0), KEY)
    with pytest.raises(ImageSourceError, match="max_images must be >= 0"):
        read_npy(_constant_npy(tmp_path / "x.npy"), (3, 8, 8), -1, _seed(0), KEY)


# ---------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------


def _save(path, mode, size, color, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pool"
    _save(root / "a" / "red.png", "RGB", (20, 10), (255, 0, 0))
    _save(root / "b" / "c" / "gray.JPG", "L", (9, 31), 77, "JPEG")
    _save(root / "z.jpeg", "RGB", (40, 40), (0, 0, 255), "JPEG")
    _save(root / "p.png", "RGBA", (12, 12), (0, 255, 0, 128))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_reads_nested_files_of_any_size_and_mode(folder):
    res = read_folder(folder, (3, 8, 8), 0, _seed(0), KEY)
    assert [f.relative_to(folder).as_posix() for f in res.files] == ["a/red.png", "b/c/gray.JPG", "p.png", "z.jpeg"]
    assert res.skipped == []
    assert res.images.dtype == torch.uint8 and res.images.shape == (4, 3, 8, 8)
    colors = res.images.float().mean((2, 3)).round().int().tolist()
    assert colors[0] == [255, 0, 0] and colors[2] == [0, 255, 0]
    assert all(abs(v - 77) <= 2 for v in colors[1]) and all(abs(a - b) <= 2 for a, b in zip(colors[3], [0, 0, 255]))
    gray = read_folder(folder, (1, 6, 10), 0, _seed(0), KEY).images
    assert gray.shape == (4, 1, 6, 10) and abs(gray[1].float().mean().item() - 77) <= 2


def test_folder_resizes_to_cover_then_center_crops(tmp_path):
    stripes = np.zeros((10, 30, 3), np.uint8)
    stripes[:, :10, 0] = stripes[:, 10:20, 1] = stripes[:, 20:, 2] = 255  # red | green | blue
    Image.fromarray(stripes).save(tmp_path / "s.png")
    x = fit_pil(Image.open(tmp_path / "s.png"), (3, 10, 10))
    assert set(x[1].flatten().tolist()) == {255} and set(x[[0, 2]].flatten().tolist()) == {0}  # the middle
    y = fit_pil(Image.open(tmp_path / "s.png"), (3, 40, 40))  # upscaled 4x to 40 x 120, then cropped
    assert y.shape == (3, 40, 40)
    assert set(y[1, :, 4:36].flatten().tolist()) == {255} and set(y[[0, 2], :, 4:36].flatten().tolist()) == {0}


def test_folder_skips_and_reports_corrupt_files(folder):
    (folder / "a" / "broken.png").write_bytes(b"\x00garbage, not a png")
    with pytest.warns(SkippedImagesWarning, match=rf"^{KEY}: skipped 1 of 5 image files under .*: a/broken\.png \("):
        res = read_folder(folder, (3, 8, 8), 0, _seed(0), KEY)
    assert res.images.shape == (4, 3, 8, 8)
    assert [f.name for f, _ in res.skipped] == ["broken.png"]


def test_folder_names_at_most_five_skipped_files(tmp_path):
    for i in range(7):
        (tmp_path / f"bad{i}.png").write_bytes(b"junk")
    _save(tmp_path / "good.png", "L", (4, 4), 9)
    with pytest.warns(SkippedImagesWarning) as w:
        res = read_folder(tmp_path, (1, 4, 4), 0, _seed(0), KEY)
    msg = str(w[0].message)
    assert "skipped 7 of 8" in msg and "bad4.png" in msg and "bad5.png" not in msg and "and 2 more" in msg
    assert res.images.flatten().tolist() == [9] * 16


def test_folder_subsample_is_seeded_and_sorted(tmp_path):
    for i in range(12):
        _save(tmp_path / f"{i:02d}.png", "L", (5, 5), 20 * i)
    res = read_folder(tmp_path, (1, 5, 5), 4, _seed(7), KEY)
    assert res.images[:, 0, 0, 0].tolist() == [20 * i for i in _expected_pick(12, 4, 7)]
    assert torch.equal(res.images, read_folder(tmp_path, (1, 5, 5), 4, _seed(7), KEY).images)
    assert not torch.equal(res.images, read_folder(tmp_path, (1, 5, 5), 4, _seed(8), KEY).images)


def test_folder_errors(tmp_path):
    with pytest.raises(ImageSourceError, match=rf"^{KEY}: '.*missing' does not exist"):
        read_folder(tmp_path / "missing", (3, 8, 8), 0, _seed(0), KEY)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ImageSourceError, match="is not a directory"):
        read_folder(tmp_path / "file.png", (3, 8, 8), 0, _seed(0), KEY)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("hi")
    with pytest.raises(ImageSourceError, match=rf"^{KEY}: no image files found under .*\.jpg, \.jpeg, \.png"):
        read_folder(empty, (3, 8, 8), 0, _seed(0), KEY)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"junk")
    (bad / "b.JPEG").write_bytes(b"")
    with pytest.raises(ImageSourceError, match=rf"^{KEY}: none of the 2 image files tried under .* \(first: a\.png: UnidentifiedImageError"):
        read_folder(bad, (3, 8, 8), 0, _seed(0), KEY)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(tmp_path / "deep.png")  # 32896 = 128 * 257
    assert fit_pil(Image.open(tmp_path / "deep.png"), (3, 4, 4)).unique().tolist() == [128]


# ---------------------------------------------------------------------------------------------------
# torchvision datasets
# ---------------------------------------------------------------------------------------------------


def test_torchvision_fakedata_subsample(tmp_path):
    opts = {"size": 12, "image_size": (3, 40, 30)}
    out = read_torchvision("FakeData", tmp_path, False, (1, 8, 8), 5, _seed(2), KEY, options=opts)
    fake = FakeData(**opts)
    expected = torch.stack([fit_pil(fake[i][0], (1, 8, 8)) for i in _expected_pick(12, 5, 2)])
    assert out.dtype == torch.uint8 and out.shape == (5, 1, 8, 8)
    assert torch.equal(out, expected)
    assert read_torchvision("FakeData", tmp_path, False, (3, 6, 6), 3, _seed(0), KEY).shape == (3, 3, 6, 6)


def test_torchvision_constructor_arguments(tmp_path):
    kw = image_sources._dataset_kwargs
    assert kw(CIFAR100, tmp_path, True) == {"root": str(tmp_path), "train": True, "download": True}
    assert kw(SVHN, tmp_path, False) == {"root": str(tmp_path), "split": "train", "download": False}
    assert kw(Places365, tmp_path, False) == {"root": str(tmp_path), "download": False}  # keeps train-standard
    assert kw(FakeData, tmp_path, False) == {}


@pytest.mark.parametrize("name", ["NoSuchSet", "utils", "_private", "folder"])
def test_torchvision_unknown_name(tmp_path, name):
    with pytest.raises(ImageSourceError) as e:
        read_torchvision(name, tmp_path, False, (3, 8, 8), 0, _seed(0), KEY)
    assert str(e.value) == (
        f"{KEY}: unknown dataset {name!r}; it must be the name of a torchvision.datasets class, "
        "e.g. CIFAR100, SVHN, FakeData"
    )


def test_torchvision_missing_files_suggest_download(tmp_path):
    with pytest.raises(ImageSourceError) as e:
        read_torchvision("CIFAR10", tmp_path, False, (3, 8, 8), 0, _seed(0), KEY)
    msg = str(e.value)
    assert msg.startswith(f"{KEY}: torchvision dataset CIFAR10 could not be loaded from root '{tmp_path}'")
    assert "set download: true" in msg


# ---------------------------------------------------------------------------------------------------
# Embedded pool
# ---------------------------------------------------------------------------------------------------


def test_embedded_sources_are_disjoint_from_the_ood_test_sets():
    assert not set(EMBEDDED_OE_IMAGES) & (set(ood_sets.TEXTURE_IMAGES) | set(ood_sets.PHOTO_IMAGES))
    assert len(set(EMBEDDED_OE_IMAGES)) == len(EMBEDDED_OE_IMAGES) == 8
    photos = image_sources.embedded_photos()
    assert len(photos) == 7 and all(p.dtype == torch.uint8 and min(p.shape[1:]) >= 400 for p in photos)
    assert image_sources._lfw_patches().shape == (200, 1, 25, 25)


def test_embedded_pool_shape_determinism_and_faces():
    a = embedded_pool(16, (1, 25, 25), _seed(5))
    assert a.dtype == torch.uint8 and a.shape == (16, 1, 25, 25)
    assert torch.equal(a, embedded_pool(16, (1, 25, 25), _seed(5)))
    assert not torch.equal(a, embedded_pool(16, (1, 25, 25), _seed(6)))
    faces = image_sources._lfw_patches().flatten(1)
    is_face = (a.flatten(1)[:, None, :] == faces[None]).all(-1).any(-1)
    assert int(is_face.sum()) == 16 // 8  # the rest are crops of the large photos
    rgb = embedded_pool(10, (3, 32, 32), _seed(5))
    assert rgb.shape == (10, 3, 32, 32) and rgb.float().std() > 10
    assert embedded_pool(0, (3, 32, 32), _seed(5)).shape == (0, 3, 32, 32)
