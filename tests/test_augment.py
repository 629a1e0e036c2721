import pytest
import torch

from trustdd.nn.augment import DSA, OPS


@pytest.mark.parametrize("op", OPS)
def test_each_op_keeps_shape_is_siamese_and_differentiable(op):
    aug = DSA(ops=(op,))
    x = torch.randn(5, 3, 16, 16, requires_grad=True)
    a, b = aug(x, seed=11), aug(x, seed=11)
    assert a.shape == x.shape
    assert torch.equal(a, b), "same seed must give the same transform"
    a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("op", ["color", "crop", "cutout", "scale", "rotate"])
def test_ops_change_images(op):
    x = torch.randn(8, 1, 16, 16)
    assert not torch.allclose(DSA(ops=(op,))(x, seed=3), x)


def test_siamese_pairs_share_transform_across_batches():
    # real and synthetic batches augmented with one seed get the same per-sample parameters
    aug = DSA(ops=("rotate",))
    x = torch.randn(4, 1, 12, 12)
    assert torch.equal(aug(x, seed=5)[:2], aug(x[:2], seed=5))


def test_crop_is_an_exact_integer_translation():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    for seed in range(10):  # shifts are at most 2 px here, so the pixel stays in frame, whole
        out = DSA(ops=("crop",))(x, seed=seed)
        assert (out.abs() > 1e-6).sum() == 1
        assert out.max() == pytest.approx(1.0, abs=1e-5)


def test_cutout_zeroes_a_half_size_square():
    x = torch.ones(6, 1, 16, 16)
    out = DSA(ops=("cutout",))(x, seed=2)
    zeros = (out == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all()  # at most 8x8, clipped at the borders


def test_unknown_op_is_a_clear_error():
    with pytest.raises(ValueError, match=r"augment.ops: invalid value \['zoom'\]; valid choices: color"):
        DSA(ops=("zoom",))


@pytest.mark.parametrize("op", OPS)
def test_shared_mode_gives_every_image_of_both_batches_one_transform(op):
    # gradient matching: a real batch of 6 and a synthetic batch of 2, augmented with one seed
    aug = DSA(ops=(op,))
    img = torch.randn(1, 3, 12, 12)
    real = aug(img.expand(6, -1, -1, -1).clone(), seed=9, shared=True)
    syn = aug(img.expand(2, -1, -1, -1).clone(), seed=9, shared=True)
    assert torch.allclose(real, real[:1].expand_as(real))
    assert torch.allclose(syn, real[:2])
    # while per-image mode draws different parameters for identical images (flip may leave some alone)
    if op != "flip":
        per_image = aug(img.expand(6, -1, -1, -1).clone(), seed=9)
        assert not torch.allclose(per_image, per_image[:1].expand_as(per_image))
