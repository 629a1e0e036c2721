"""Every number the evaluation reports, in percent, in one module.

Convention: a score is higher for images the net believes are in-distribution (InD).

OOD detection, per OOD set (``ood_metrics``):

- ``auroc``: area under the ROC curve of InD vs OOD scores. The same number whichever class is called
  positive (with the score negated for OOD-positive), so it needs no suffix.
- ``aupr_in``: average precision with InD as the positive class; ``aupr_out``: with OOD positive.
- ``fpr95_in``: InD positive (the default of the Outlier Exposure evaluation code; TrustDD's "FPR(IN)").
  The share of OOD images ACCEPTED as InD at the threshold that keeps 95% of InD test images.
- ``fpr95_out``: OOD positive (OpenOOD v1.5; the OE code's ``--out_as_pos``; TrustDD's "FPR(OUT)"). The
  share of InD test images REJECTED at the threshold that catches 95% of OOD images.

As for AUPR, the suffix names the positive class. Tied scores share one threshold, so ties are never
split in the detector's favour.

Threshold rule (both FPRs): the HIGHEST threshold whose true-positive rate is AT LEAST 95% (the first
point of scikit-learn's ``roc_curve`` to reach 0.95), so 95% of the positives are always kept and the
negatives scored between that positive and the next one down are not counted. This is NOT the rule of
the OE / TrustDD code (``fpr_and_fdr_at_recall`` in TrustDD's utils/ood_utils.py): it takes the recall
level NEAREST 0.95, which may be below it (16 positives: 15/16 = 93.75%), and at that level the LOWEST
threshold, counting every negative above the next positive. With m the first positive that reaches 95%,
it gives the same FPR as trustdd when its level is just below 95% (ties with positive m aside), and a
higher one when its level is m's own (e.g. 20 positives: it also counts the negatives between positive
19 and 20). In one draw of 2,000 + 2,000 normal scores (means 1 and 0): 70.8% against 70.35%.

On the InD test set (``misclassification_auroc``, ``expected_calibration_error``):

- ``misclassification_auroc``: AUROC of the maximum softmax probability at telling right predictions
  (positive) from wrong ones.
- ``ece``: expected calibration error with 15 equal-width confidence bins (Guo et al. 2017).
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr95_in", "fpr95_out")
GROUPS = ("all", "near", "far")  # averages over OOD sets; "all" covers every set, grouped or not
CONVENTIONS = {
    "score": "higher = more in-distribution",
    "auroc": "InD vs OOD; identical for either positive class",
    "aupr_in": "average precision, InD positive",
    "aupr_out": "average precision, OOD positive",
    "fpr95_in": "OOD accepted (%) at the threshold keeping 95% of InD (InD positive, as TrustDD's FPR(IN))",
    "fpr95_out": "InD rejected (%) at the threshold catching 95% of OOD (OOD positive; OpenOOD v1.5)",
    "fpr95_threshold": "the highest threshold with TPR >= 95% (not the OE/TrustDD code's recall nearest 95%)",
    "misclassification_auroc": "MSP, right (positive) vs wrong predictions on the InD test set",
    "ece": "expected calibration error, 15 equal-width bins of the max softmax probability",
    "aggregation": "per net: average over the OOD sets of a group; then mean and std (ddof 0) over nets",
}


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def fpr_at_tpr(score_pos, score_neg, tpr: float = 0.95) -> float:
    """False-positive rate at the largest threshold whose true-positive rate is >= ``tpr``
    (positives are the items with HIGHER scores). Not the OE code's nearest-recall rule: see the module."""
    from sklearn.metrics import roc_curve  # 1.5 s to import: only scoring needs it

    pos, neg = _np(score_pos), _np(score_neg)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fprs, tprs, _ = roc_curve(labels, np.r_[pos, neg], drop_intermediate=False)
    return float(fprs[np.argmax(tprs >= tpr)])


def ood_metrics(score_in, score_out) -> dict[str, float]:
    """All five OOD metrics (percent) for one OOD set."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # 1.5 s to import: only scoring needs it

    s_in, s_out = _np(score_in), _np(score_out)
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError(f"OOD metrics need scores on both sides; got {len(s_in)} InD and {len(s_out)} OOD")
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scores = np.r_[s_in, s_out]
    return {
        "auroc": 100.0 * float(roc_auc_score(labels, scores)),
        "aupr_in": 100.0 * float(average_precision_score(labels, scores)),
        "aupr_out": 100.0 * float(average_precision_score(1 - labels, -scores)),
        "fpr95_in": 100.0 * fpr_at_tpr(s_in, s_out),
        "fpr95_out": 100.0 * fpr_at_tpr(-s_out, -s_in),
    }


def roc_points(score_in, score_out, grid: int = 101) -> list[dict[str, float]]:
    """The ROC curve (InD positive) sampled at ``grid`` evenly spaced FPRs, for plotting: at each FPR, the
    best TPR reachable without exceeding it."""
    from sklearn.metrics import roc_curve  # 1.5 s to import: only scoring needs it

    s_in, s_out = _np(score_in), _np(score_out)
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    fprs, tprs, _ = roc_curve(labels, np.r_[s_in, s_out])
    at = np.linspace(0.0, 1.0, grid)
    best = np.array([tprs[fprs <= f].max() for f in at])
    return [{"fpr": round(float(f), 4), "tpr": round(float(t), 4)} for f, t in zip(at, best)]


def misclassification_auroc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC (percent) of the maximum softmax probability for right (positive) vs wrong predictions.
    NaN when every prediction is right or every one is wrong (the AUROC is undefined then)."""
    from sklearn.metrics import roc_auc_score  # 1.5 s to import: only scoring needs it

    probs = logits.double().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).numpy()
    if correct.all() or not correct.any():
        return float("nan")
    return 100.0 * float(roc_auc_score(correct, confidence.numpy()))


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE (percent): sum over equal-width confidence bins (lo, hi] of |accuracy - mean confidence| weighted
    by the share of images in the bin; confidence is the maximum softmax probability."""
    probs = logits.double().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        member = (confidence > lo) & (confidence <= hi)
        if member.any():
            gap = (correct[member].mean() - confidence[member].mean()).abs()
            total += float(gap) * float(member.double().mean())
    return 100.0 * total


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and population std (ddof 0) over evaluation nets."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def group_members(sets: list[str], groups: dict[str, str]) -> dict[str, list[str]]:
    """``{"all": every set, "near": [...], "far": [...]}``; a group with no member is left out."""
    out = {"all": list(sets)}
    for g in GROUPS[1:]:
        members = [s for s in sets if groups.get(s) == g]
        if members:
            out[g] = members
    return out


def summarize_ood(per_net: list[dict[str, dict[str, float]]], groups: dict[str, str]) -> dict[str, dict]:
    """``per_net[i][set][metric]`` -> ``{group or set: {metric: {mean, std}}}``. Group values are averaged
    over the group's sets within each net first, then the mean and std are taken over nets."""
    sets = list(per_net[0])
    rows: dict[str, list[dict[str, float]]] = {}
    for group, members in group_members(sets, groups).items():
        rows[group] = [{m: float(np.mean([net[s][m] for s in members])) for m in METRIC_NAMES} for net in per_net]
    for s in sets:
        rows[s] = [net[s] for net in per_net]
    return {name: {m: mean_std([r[m] for r in values]) for m in METRIC_NAMES} for name, values in rows.items()}
