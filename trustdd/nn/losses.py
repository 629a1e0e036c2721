"""Training objectives: cross-entropy on InD images plus Outlier Exposure on outliers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def oe_loss(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Outlier Exposure (Hendrycks et al. 2019): cross-entropy from the softmax to the uniform distribution.

    ``-(mean_k f_k(x) - logsumexp_k f_k(x))``, averaged over the batch (``reduction="none"``: one value
    per row). Its minimum, log(K), is reached when all logits of a row are equal.
    """
    if logits.numel() == 0:
        return logits.sum() if reduction == "mean" else logits.sum(dim=1)
    per_row = -(logits.mean(dim=1) - torch.logsumexp(logits, dim=1))
    return per_row.mean() if reduction == "mean" else per_row


def trustdd_loss(
    logits_in: torch.Tensor,
    labels: torch.Tensor,
    logits_out: torch.Tensor | None,
    lambda_oe: float,
) -> torch.Tensor:
    """``CE(f(x_in), y) + lambda_oe * L_OE(f(x_out))``; plain CE when there are no outliers."""
    loss = F.cross_entropy(logits_in, labels)
    if logits_out is not None and logits_out.shape[0] > 0 and lambda_oe:
        loss = loss + lambda_oe * oe_loss(logits_out)
    return loss
