import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import make_grid

from trustdd.previews import labelled_grid


def _images(n: int, c: int = 1, size: int = 28) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(n))


def test_each_row_gets_its_label_left_of_the_unchanged_grid(tmp_path):
    x = _images(6)
    labels = ["T-shirt/top", "Trouser", "jigsaw"]
    labelled_grid(x, labels, 2, tmp_path / "g.png")
    page = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    grid = make_grid(x, nrow=2, padding=1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    margin = page.shape[1] - grid.shape[1]
    assert margin > 0 and page.shape[0] == grid.shape[0] == 3 * 29 + 1
    assert np.array_equal(page[:, margin:], grid)  # the images themselves are untouched
    for row in range(3):  # every row's band of the margin holds text, and rows differ as their labels do
        band = page[1 + row * 29 : (row + 1) * 29, :margin]
        assert band.max() == 255, labels[row]
    bands = [page[1 + r * 29 : (r + 1) * 29, :margin] for r in range(3)]
    assert not np.array_equal(bands[0], bands[1]) and not np.array_equal(bands[1], bands[2])


def test_the_same_call_writes_the_same_bytes_and_colour_images_keep_their_colours(tmp_path):
    x = _images(4, c=3, size=32)
    labelled_grid(x, ["a", "b"], 2, tmp_path / "1.png")
    labelled_grid(x, ["a", "b"], 2, tmp_path / "2.png")
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()
    page = np.asarray(Image.open(tmp_path / "1.png"))
    grid = make_grid(x, nrow=2, padding=1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(page[:, page.shape[1] - grid.shape[1] :], grid)


def test_images_that_do_not_fill_the_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="5 images do not fill 3 rows of 2"):
        labelled_grid(_images(5), ["a", "b", "c"], 2, tmp_path / "g.png")
