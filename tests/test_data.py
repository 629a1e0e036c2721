
import pytest
import torch

from trustdd.data.images import fit_images, stratified_subset


def test_stratified_subset_is_balanced_and_seeded():
    labels = torch.arange(100) % 4
    a = stratified_subset(labels, 5, torch.Generator().manual_seed(0))
    b = stratified_subset(labels, 5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="fewer than the 30"):
        stratified_subset(labels, 30, torch.Generator())


def test_stratified_subset_takes_a_count_per_class():
    labels = torch.arange(100) % 4
    pick = stratified_subset(labels, [1, 0, 3], torch.Generator().manual_seed(0))  # class 3: past the list, none
    assert labels[pick].tolist() == [0, 2, 2, 2]
    same = stratified_subset(labels, [5, 5, 5, 5], torch.Generator().manual_seed(0))
    assert torch.equal(same, stratified_subset(labels, 5, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="class 1 has 25 images, fewer than the 26 asked for"):
        stratified_subset(labels, [0, 26], torch.Generator())


def test_fit_images_converts_channels_and_size():
    rgb = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    assert fit_images(rgb, (1, 28, 28)).shape == (2, 1, 28, 28)
    gray = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8)
    assert fit_images(gray, (3, 32, 32)).shape == (2, 3, 32, 32)
