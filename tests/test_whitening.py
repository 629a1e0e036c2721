import pytest
import torch

from trustdd.data.datasets import DATASETS, Split
from trustdd.data.images import InputTransform
from trustdd.data.prepared import Prepared, prepare
from trustdd.data.whitening import ZCA


def correlated_images(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 4, 4, generator=g)
    # neighbouring pixels strongly correlated, as in natural images
    return base + 0.9 * base.roll(1, dims=3) + 0.5 * base.roll(1, dims=2)


def test_whiten_then_unwhiten_returns_the_image():
    x = correlated_images()
    zca = ZCA.fit(x, reg=0.1)
    assert torch.allclose(zca.unwhiten(zca.whiten(x)), x, atol=1e-4)
    y = torch.randn(5, 1, 4, 4)
    assert torch.allclose(zca.whiten(zca.unwhiten(y)), y, atol=1e-4)


def test_whitened_covariance_is_near_identity_with_a_tiny_regulariser():
    x = correlated_images()
    w = ZCA.fit(x, reg=1e-6).whiten(x).reshape(x.shape[0], -1)
    cov = torch.cov(w.T)
    assert torch.allclose(cov, torch.eye(16), atol=1e-2)
    # orthonormal eigenvectors: what makes unwhiten the exact inverse of whiten
    zca = ZCA.fit(x, reg=1e-6)
    assert torch.allclose(zca.eigvecs @ zca.eigvecs.T, torch.eye(16), atol=1e-5)


def test_regulariser_must_be_positive():
    with pytest.raises(ValueError, match=r"data.zca_reg: invalid value 0; expected a number > 0"):
        ZCA.fit(correlated_images(), reg=0)


def test_transform_round_trips_through_its_dict_and_inverts_to_pixels():
    x = (torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 255).round().to(torch.uint8)
    plain = InputTransform((0.5,), (0.25,))
    zca = ZCA.fit(plain(x), reg=0.1)
    t = InputTransform((0.5,), (0.25,), zca)
    back = InputTransform.from_dict(t.to_dict())
    assert torch.equal(back(x), t(x))
    assert not torch.allclose(t(x), plain(x)), "whitening must change the inputs"
    assert torch.allclose(t.inverse(t(x)), x.float() / 255, atol=1e-4)
    assert InputTransform.from_dict(plain.to_dict()).zca is None


def test_prepare_fits_zca_on_the_train_set_and_prepared_round_trips():
    info = DATASETS.get("fashion_mnist")
    g = torch.Generator().manual_seed(0)
    split = Split(
        torch.randint(0, 256, (40, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(10).repeat(4),
        torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(10),
    )
    off = prepare(info, split, 0, g)
    assert off.zca is None and "zca" not in off.to_dict()
    on = prepare(info, split, 0, g, zca_reg=0.1)
    assert on.zca is not None and on.zca.mean.shape == (784,)
    again = Prepared.from_dict(on.to_dict())
    assert torch.equal(again.norm(split.test_x), on.norm(split.test_x))
    assert torch.allclose(on.norm(split.train_x).mean(0), torch.zeros(1, 28, 28), atol=1e-4)
