import numpy as np
import pytest
import torch

from trustdd.data.image_sources import ImageSourceError
from trustdd.data.images import fit_images
from trustdd.outliers.sources import OEConfig, PoolRequest, build_pool
from trustdd.registry import UnknownChoiceError


def request(oe=None, corruptions=("jigsaw", "invert"), per_type=5, seed=0):
    train_x = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return PoolRequest(train_x, corruptions, {}, per_type, torch.Generator().manual_seed(seed), oe or OEConfig())


def test_none_is_an_empty_pool_of_the_ind_shape():
    pool = build_pool("none", request())
    assert len(pool) == 0 and pool.x.shape == (0, 1, 8, 8) and pool.kinds == ()


def test_poe_has_per_type_images_of_each_corruption_in_order():
    pool = build_pool("poe", request())
    assert pool.x.shape == (10, 1, 8, 8) and pool.x.dtype == torch.uint8
    assert pool.kind.tolist() == [0] * 5 + [1] * 5 and pool.kinds == ("jigsaw", "invert")


def test_oe_from_npy_converts_to_the_ind_shape_and_caps_the_count(tmp_path):
    arr = np.zeros((30, 16, 16, 3), dtype=np.uint8)
    arr[:] = (np.arange(30, dtype=np.uint8) * 8)[:, None, None, None]  # image i: grey level 8 i
    path = tmp_path / "300K_random_images.npy"
    np.save(path, arr)
    pool = build_pool("oe", request(OEConfig(format="npy", path=str(path), max_images=10)))
    assert pool.x.shape == (10, 1, 8, 8) and pool.kinds == ("oe",) and pool.kind.tolist() == [0] * 10
    # every image is one of the 30 source images converted to grey, no repeats
    values = pool.x[:, 0, 0, 0].tolist()
    grey = fit_images(torch.from_numpy(arr).permute(0, 3, 1, 2), (1, 8, 8))[:, 0, 0, 0].tolist()
    assert len(set(grey)) == 30 and set(values) <= set(grey) and len(set(values)) == 10
    assert torch.equal(pool.x, pool.x[:, :, :1, :1].expand_as(pool.x)), "flat images stay flat"
    again = build_pool("oe", request(OEConfig(format="npy", path=str(path), max_images=10)))
    assert torch.equal(pool.x, again.x)


def test_oe_errors_name_the_key(tmp_path):
    with pytest.raises(ImageSourceError, match=r"outliers.oe.path: .*nope.npy' does not exist"):
        build_pool("oe", request(OEConfig(format="npy", path=str(tmp_path / "nope.npy"))))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageSourceError, match=r"outliers.oe.path: no image files found under"):
        build_pool("oe", request(OEConfig(format="folder", path=str(empty))))
    with pytest.raises(UnknownChoiceError, match=r"outliers.oe.format: unknown value 'csv'"):
        build_pool("oe", request(OEConfig(format="csv")))


def test_embedded_oe_pool_is_seeded_and_sized():
    a = build_pool("oe", request(OEConfig(max_images=40), seed=3))
    b = build_pool("oe", request(OEConfig(max_images=40), seed=3))
    assert a.x.shape == (40, 1, 8, 8) and torch.equal(a.x, b.x)
    assert a.x.float().std() > 10, "photo crops, not blank images"
