import pytest
import torch


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
