import math

import torch
import torch.nn.functional as F

from trustdd.nn.losses import oe_loss, trustdd_loss


def test_oe_loss_is_log_k_for_uniform_logits():
    logits = torch.full((4, 10), 3.7)
    assert math.isclose(float(oe_loss(logits)), math.log(10), rel_tol=1e-6)


def test_oe_loss_hand_computed():
    # logits [0, ln 3]: mean = ln3 / 2, logsumexp = ln(1 + 3) = ln 4
    logits = torch.tensor([[0.0, math.log(3)]])
    assert math.isclose(float(oe_loss(logits)), math.log(4) - math.log(3) / 2, rel_tol=1e-6)


def test_oe_loss_equals_cross_entropy_to_uniform():
    logits = torch.randn(16, 7, generator=torch.Generator().manual_seed(0))
    uniform = torch.full_like(logits, 1 / 7)
    assert torch.allclose(oe_loss(logits), F.cross_entropy(logits, uniform))


def test_trustdd_loss_adds_weighted_oe_and_skips_empty_outliers():
    g = torch.Generator().manual_seed(0)
    logits_in, labels = torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    logits_out = torch.randn(4, 3, generator=g)
    ce = F.cross_entropy(logits_in, labels)
    assert torch.allclose(trustdd_loss(logits_in, labels, logits_out, 0.5), ce + 0.5 * oe_loss(logits_out))
    assert torch.allclose(trustdd_loss(logits_in, labels, None, 0.5), ce)
    assert torch.allclose(trustdd_loss(logits_in, labels, logits_out[:0], 0.5), ce)


def test_oe_loss_per_row_averages_to_the_batch_loss():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    rows = oe_loss(logits, reduction="none")
    assert rows.shape == (5,)
    assert math.isclose(float(oe_loss(logits[2:3])), float(rows[2]), rel_tol=1e-6)
    assert float(rows.mean()) == float(oe_loss(logits))
    assert oe_loss(logits[:0], reduction="none").shape == (0,)
