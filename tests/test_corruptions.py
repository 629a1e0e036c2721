import numpy as np
import pytest
import torch
from PIL import Image

from trustdd.data.images import to_uint8
from trustdd.options import make
from trustdd.outliers.corruptions import CORRUPTIONS, Invert, Jigsaw, Pixelate
from trustdd.registry import UnknownChoiceError

PAPER_FOUR = ["jigsaw", "invert", "pixelate", "speckle"]


@pytest.mark.parametrize("name", PAPER_FOUR)
def test_shape_range_and_change(name, images):
    out = make(CORRUPTIONS, name)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    per_image_change = (out - images).abs().flatten(1).max(dim=1).values
    assert (per_image_change > 1e-3).all(), f"{name} left an image unchanged"


@pytest.mark.parametrize("name", PAPER_FOUR)
def test_deterministic_for_a_seed(name, images):
    c = make(CORRUPTIONS, name)
    a = c(images, torch.Generator().manual_seed(3))
    b = c(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_random_corruptions_differ_across_seeds(images):
    for name in ["jigsaw", "speckle"]:
        c = make(CORRUPTIONS, name)
        assert not torch.equal(c(images, torch.Generator().manual_seed(1)), c(images, torch.Generator().manual_seed(2)))


def test_invert_keeps_red_and_inverts_green_blue():
    x = torch.rand(2, 3, 8, 8)
    out = Invert()(x, torch.Generator())
    assert torch.equal(out[:, 0], x[:, 0])
    assert torch.allclose(out[:, 1:], 1 - x[:, 1:])
    gray = torch.rand(2, 1, 8, 8)
    assert torch.allclose(Invert()(gray, torch.Generator()), 1 - gray)


def test_jigsaw_is_a_permutation_of_tiles():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    out = Jigsaw(grid=2)(x, torch.Generator().manual_seed(0))
    tiles = lambda t: sorted(tuple(t[0, 0, i : i + 2, j : j + 2].flatten().tolist()) for i in (0, 2) for j in (0, 2))  # noqa: E731
    assert tiles(out) == tiles(x)
    assert not torch.equal(out, x)


def test_jigsaw_keeps_the_remainder_border():
    x = torch.rand(3, 1, 30, 30)
    out = Jigsaw(grid=4)(x, torch.Generator().manual_seed(0))  # tiles of 7px cover 28, 2px remain
    assert torch.equal(out[..., 28:, :], x[..., 28:, :])
    assert torch.equal(out[..., :, 28:], x[..., :, 28:])


def test_pixelate_is_blockwise_constant_on_32px():
    x = torch.rand(2, 3, 32, 32)
    out = Pixelate(factor=0.25)(x, torch.Generator())  # 8x8 blocks of 4x4 pixels
    block = out[:, :, :4, :4]
    assert torch.allclose(block, block[:, :, :1, :1].expand_as(block))
    assert torch.allclose(block[:, :, 0, 0], x[:, :, :4, :4].mean(dim=(2, 3)))


def _pil_mosaic(plane, factor):
    """The TrustDD code's mosaic (utils/gen_ood_loader_cifar.py): PIL BOX down to int(side x factor), BOX back."""
    w, h = plane.size
    return plane.resize((int(w * factor), int(h * factor)), Image.BOX).resize((w, h), Image.BOX)


def _test_images(shape, kind):
    c, h, w = shape
    if kind == "random":
        return torch.rand(4, c, h, w, generator=torch.Generator().manual_seed(5))
    ramp_y, ramp_x = torch.linspace(0, 1, h).view(h, 1), torch.linspace(0, 1, w).view(1, w)
    return torch.stack([(ramp_y * (k + 1) / 4 + ramp_x * (3 - k) / 4).expand(c, h, w) for k in range(4)])


PIL_SHAPES = [(3, 32, 32), (1, 28, 28), (3, 30, 45)]
PIL_FACTORS = [0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 1.0]


@pytest.mark.parametrize("kind", ["random", "gradient"])
@pytest.mark.parametrize("factor", PIL_FACTORS)
@pytest.mark.parametrize("shape", PIL_SHAPES, ids=["rgb32", "gray28", "rgb30x45"])
def test_pixelate_equals_the_trustdd_pil_mosaic(shape, factor, kind):
    x = _test_images(shape, kind)
    out = Pixelate(factor=factor)(x, torch.Generator())
    # float images (PIL mode F, no rounding): equal to float precision
    ref = np.stack([[np.asarray(_pil_mosaic(Image.fromarray(p.numpy(), mode="F"), factor)) for p in img] for img in x])
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    # uint8 images, as the pool stores them: PIL rounds after each of its 1-D passes, we round once
    x8 = to_uint8(x)
    ours = to_uint8(Pixelate(factor=factor)(x8.float() / 255, torch.Generator())).numpy().astype(int)
    planes = [Image.fromarray(img.permute(1, 2, 0).squeeze(2).numpy()) for img in x8]  # RGB or L
    ref8 = np.stack([np.asarray(_pil_mosaic(p, factor)).reshape(*shape[1:], -1).transpose(2, 0, 1) for p in planes])
    assert np.abs(ours - ref8.astype(int)).max() <= 1


def test_pixelate_blocks_are_the_means_of_exactly_the_pixels_they_cover():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = Pixelate(factor=0.2)(x, torch.Generator())  # int(6.4) = 6 blocks per side, of 5, 6, 5, 5, 6, 5 pixels
    edges = [0, 5, 11, 16, 21, 27, 32]
    for top, bottom in zip(edges[:-1], edges[1:]):
        for left, right in zip(edges[:-1], edges[1:]):
            block = out[:, :, top:bottom, left:right]
            mean = x[:, :, top:bottom, left:right].mean(dim=(2, 3), keepdim=True)
            torch.testing.assert_close(block, mean.expand_as(block))
    # 28 x 0.2 = 5.6: 5 blocks (the TrustDD code truncates), not round(5.6) = 6
    gray = Pixelate(factor=0.2)(torch.rand(1, 1, 28, 28), torch.Generator())
    assert gray[0, 0].unique(dim=0).shape[0] == 5 and gray[0, 0].unique(dim=1).shape[1] == 5


def test_speckle_leaves_black_pixels_black():
    x = torch.rand(2, 1, 8, 8)
    x[:, :, :4] = 0
    out = make(CORRUPTIONS, "speckle")(x, torch.Generator().manual_seed(0))
    assert (out[:, :, :4] == 0).all()


def test_unknown_corruption_and_bad_option_are_clear():
    with pytest.raises(UnknownChoiceError, match=r"outliers.corruptions: unknown value 'fog'; valid choices: .*jigsaw"):
        make(CORRUPTIONS, "fog")
    with pytest.raises(ValueError, match=r"unknown key\(s\) outliers.options.pixelate.size; valid keys: factor"):
        make(CORRUPTIONS, "pixelate", {"size": 3})
    with pytest.raises(ValueError, match="pixelate.factor"):
        make(CORRUPTIONS, "pixelate", {"factor": 2.0})(torch.rand(1, 1, 8, 8), torch.Generator())


def test_registry_holds_the_paper_four():
    assert set(PAPER_FOUR) <= set(CORRUPTIONS.names())


ALL = CORRUPTIONS.names()


def _shape_error(name, images):
    """The documented refusals: rgb_ghost on grayscale, rotate_flip on non-square images."""
    if name == "rgb_ghost" and images.shape[1] != 3:
        return "needs 3-channel"
    if name == "rotate_flip" and images.shape[-1] != images.shape[-2]:
        return "needs square"
    return None


@pytest.mark.parametrize("name", ALL)
def test_every_corruption_shape_range_change_and_determinism(name, images):
    c = make(CORRUPTIONS, name)
    refusal = _shape_error(name, images)
    if refusal:
        with pytest.raises(ValueError, match=refusal):
            c(images, torch.Generator().manual_seed(0))
        return
    out = c(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert ((out - images).abs().flatten(1).max(dim=1).values > 1e-3).all(), f"{name} left an image unchanged"
    assert torch.equal(out, c(images, torch.Generator().manual_seed(0)))


def test_mean_and_geometric_mean_of_two_images():
    a, b = torch.full((1, 1, 2, 2), 0.25), torch.full((1, 1, 2, 2), 0.64)
    x = torch.cat([a, b])
    mean = make(CORRUPTIONS, "mean_mix")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(mean, torch.full_like(x, (0.25 + 0.64) / 2))
    geo = make(CORRUPTIONS, "geometric_mean_mix")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(geo, torch.full_like(x, 0.4))  # sqrt(0.25 * 0.64)
    with pytest.raises(ValueError, match="at least 2 images"):
        make(CORRUPTIONS, "mean_mix")(a, torch.Generator())


def test_rgb_ghost_keeps_green_and_moves_red_and_blue_apart():
    x = torch.zeros(1, 3, 20, 20)
    x[:, :, 10, 10] = 1.0
    out = make(CORRUPTIONS, "rgb_ghost", {"shift": 0.1})(x, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 1], x[:, 1])
    red, blue = torch.nonzero(out[0, 0])[0], torch.nonzero(out[0, 2])[0]
    assert (red - 10).abs().tolist() == [2, 2] and (red - 10).tolist() == (10 - blue).tolist()


def test_rotate_flip_never_gives_identity_or_a_mirror():
    x = torch.rand(40, 1, 6, 6)
    out = make(CORRUPTIONS, "rotate_flip")(x, torch.Generator().manual_seed(0))
    for img, o in zip(x, out):
        assert not torch.equal(o, img) and not torch.equal(o, img.flip(2))
        assert any(torch.equal(o, t) for t in (img.transpose(1, 2), img.rot90(2, dims=(1, 2)), img.rot90(3, dims=(1, 2)).flip(1)))


def test_blur_removes_high_frequencies():
    x = (torch.arange(16).view(1, 1, 1, 16) % 2).float().expand(2, 1, 16, 16).contiguous()  # stripes
    out = make(CORRUPTIONS, "blur")(x, torch.Generator())
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert tv(out) < 0.2 * tv(x)


def test_patch_shuffle_only_moves_pixels():
    x = torch.rand(5, 1, 24, 24)
    out = make(CORRUPTIONS, "patch_shuffle")(x, torch.Generator().manual_seed(1))
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    with pytest.raises(ValueError, match=r"patch_shuffle.max_grid: invalid value 3; expected an integer >= min_grid \(5\)"):
        make(CORRUPTIONS, "patch_shuffle", {"min_grid": 5, "max_grid": 3})
