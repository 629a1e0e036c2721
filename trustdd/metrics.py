"""OOD-detection metrics, in percent. Convention: InD is the POSITIVE class and higher score = InD.

- ``auroc``: area under the ROC curve of InD-vs-OOD scores.
- ``aupr_in``: average precision with InD as positive; ``aupr_out``: with OOD as positive (scores negated).
- ``fpr95``: share of OOD images accepted at the threshold that accepts 95% of InD images
  (the largest threshold whose InD true-positive rate is >= 95%).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def fpr_at_tpr(score_in: np.ndarray, score_out: np.ndarray, tpr: float = 0.95) -> float:
    labels = np.r_[np.ones(len(score_in)), np.zeros(len(score_out))]
    fprs, tprs, _ = roc_curve(labels, np.r_[score_in, score_out], drop_intermediate=False)
    return float(fprs[np.argmax(tprs >= tpr)])


def ood_metrics(score_in, score_out) -> dict[str, float]:
    """All four metrics (percent) for one OOD set."""
    s_in, s_out = _np(score_in), _np(score_out)
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError(f"OOD metrics need scores on both sides; got {len(s_in)} InD and {len(s_out)} OOD")
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scores = np.r_[s_in, s_out]
    return {
        "auroc": 100.0 * float(roc_auc_score(labels, scores)),
        "aupr_in": 100.0 * float(average_precision_score(labels, scores)),
        "aupr_out": 100.0 * float(average_precision_score(1 - labels, -scores)),
        "fpr95": 100.0 * fpr_at_tpr(s_in, s_out),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and population std (ddof 0) over evaluation nets."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}
