import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from trustdd.evaluation.metrics import (
    METRIC_NAMES,
    expected_calibration_error,
    fpr_at_tpr,
    group_members,
    mean_std,
    misclassification_auroc,
    ood_metrics,
    roc_points,
    summarize_ood,
)


def test_hand_computed_case():
    # ranking (desc): .9 I, .8 I, .7 I, .65 O, .6 I, .5 O
    m = ood_metrics(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.65, 0.5]))
    assert m["auroc"] == pytest.approx(100 * 7 / 8)  # 7 of 8 (InD, OOD) pairs ordered right
    assert m["aupr_in"] == pytest.approx(100 * (1 + 1 + 1 + 4 / 5) / 4)
    assert m["aupr_out"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # InD positive: keeping 95% of 4 InD images means keeping all 4 (threshold 0.6): OOD 0.65 gets in
    assert m["fpr95_in"] == pytest.approx(50.0)
    # OOD positive: catching 95% of 2 OOD images means catching both (reject <= 0.65): InD 0.6 is rejected
    assert m["fpr95_out"] == pytest.approx(25.0)


def test_tied_scores_are_not_split_in_the_detectors_favour():
    # every image scores the same: no threshold separates anything
    tie = ood_metrics(torch.ones(4), torch.ones(4))
    assert tie["auroc"] == pytest.approx(50.0)
    assert tie["fpr95_in"] == pytest.approx(100.0) and tie["fpr95_out"] == pytest.approx(100.0)
    # InD 1, 1, 0.5, 0.5; OOD 0.5, 0: keeping 95% of InD needs threshold 0.5, which also accepts the OOD
    # image tied at 0.5 (1 of 2). AUROC: each InD 1 beats both OOD (4 pairs); each InD 0.5 ties one and
    # beats one (2 x 1.5), so 7 of 8 pairs
    m = ood_metrics(torch.tensor([1.0, 1.0, 0.5, 0.5]), torch.tensor([0.5, 0.0]))
    assert m["fpr95_in"] == pytest.approx(50.0)
    assert m["auroc"] == pytest.approx(100 * (4 + 3) / 8)
    # OOD positive: catching both OOD images needs "reject <= 0.5", which rejects the two InD at 0.5
    assert m["fpr95_out"] == pytest.approx(50.0)


def test_perfect_and_inverted_separation():
    s_in, s_out = torch.tensor([5.0, 6.0, 7.0]), torch.tensor([1.0, 2.0])
    perfect = ood_metrics(s_in, s_out)
    assert perfect == pytest.approx(
        {"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0, "fpr95_in": 0.0, "fpr95_out": 0.0}
    )
    inverted = ood_metrics(s_out, s_in)
    assert inverted["auroc"] == pytest.approx(0.0)
    assert inverted["fpr95_in"] == pytest.approx(100.0) and inverted["fpr95_out"] == pytest.approx(100.0)


def test_matches_scikit_learn_on_random_scores():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 500), rng.normal(0, 1, 300)
    m = ood_metrics(torch.tensor(s_in), torch.tensor(s_out))
    y = np.r_[np.ones(500), np.zeros(300)]
    s = np.r_[s_in, s_out]
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s))
    assert m["aupr_in"] == pytest.approx(100 * average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(1 - y, -s))
    threshold = np.sort(s_in)[int(np.floor(0.05 * 500))]  # the 95%-acceptance threshold on 500 InD
    assert (s_in >= threshold).mean() >= 0.95
    assert m["fpr95_in"] == pytest.approx(100 * (s_out >= threshold).mean())
    cut = np.sort(s_out)[::-1][int(np.floor(0.05 * 300))]  # reject every score <= cut: 95% of OOD caught
    assert (s_out <= cut).mean() >= 0.95
    assert m["fpr95_out"] == pytest.approx(100 * (s_in <= cut).mean())


def _fpr_oe_rule(pos, neg, level=0.95):
    """The OE / TrustDD code's rule (fpr_and_fdr_at_recall), restated: among the distinct scores from the
    lowest positive one up, the LOWEST threshold whose recall is NEAREST ``level`` (above or below it).
    Returns (fpr, recall) there."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    thresholds = np.unique(np.r_[pos, neg])
    thresholds = thresholds[thresholds >= pos.min()]  # ascending
    recall = np.array([(pos >= t).sum() for t in thresholds]) / len(pos)
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    i = np.argmin(np.abs(recall - level))  # the first, i.e. lowest, threshold at the nearest recall
    return float(fpr[i]), float(recall[i])


def test_fpr95_is_the_highest_threshold_with_tpr_at_least_95_not_the_oe_nearest_recall_rule():
    s_out = np.arange(2.0, 7.0)  # 5 OOD images
    # 20 InD: 19 score 10..28, one scores 1, below every OOD image. 19/20 = 95% exactly: trustdd stops at
    # the 19th InD image (score 10), no OOD accepted; the OE rule takes the lowest threshold with that
    # recall, just above the 20th, and accepts every OOD image.
    s_in = np.r_[1.0, np.arange(10.0, 29.0)]
    assert fpr_at_tpr(s_in, s_out) == 0.0 and ood_metrics(s_in, s_out)["fpr95_in"] == 0.0
    assert _fpr_oe_rule(s_in, s_out) == (1.0, 0.95)
    # the same with OOD positive (fpr95_out): 20 OOD images, one of them among the 5 InD ones
    assert ood_metrics(-s_out, -s_in)["fpr95_out"] == 0.0 and _fpr_oe_rule(s_in, s_out)[0] == 1.0
    # 16 InD: the OE rule's recall is 15/16 = 93.75% (nearer 95% than 100%), below 95%; trustdd keeps
    # all 16. Here the FPRs agree: both count the OOD images scored above the 16th InD one.
    s_in16 = np.r_[1.0, np.arange(10.0, 25.0)]
    assert _fpr_oe_rule(s_in16, s_out) == (1.0, 15 / 16)
    assert fpr_at_tpr(s_in16, s_out) == 1.0


def test_fpr_at_tpr_is_generic_in_the_positive_class():
    assert fpr_at_tpr([3.0, 2.0], [2.5, 0.0], tpr=0.5) == pytest.approx(0.0)
    assert fpr_at_tpr([3.0, 2.0], [2.5, 0.0], tpr=1.0) == pytest.approx(0.5)


def test_empty_side_is_an_error():
    with pytest.raises(ValueError, match="both sides"):
        ood_metrics(torch.tensor([1.0]), torch.tensor([]))


def test_roc_points_start_at_zero_and_end_at_one():
    pts = roc_points(torch.tensor([0.9, 0.8, 0.3]), torch.tensor([0.5, 0.1]), grid=5)
    assert [p["fpr"] for p in pts] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # FPR 0 and 0.25: a threshold above 0.5 keeps 2 of 3 InD; at FPR 0.5 (0.5 accepted) 0.3 can be too
    assert [p["tpr"] for p in pts] == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0, 1.0], abs=1e-4)


def test_ece_hand_computed():
    # Two classes. Confidences (max softmax) 0.9, 0.9, 0.6, 0.6 with predictions right, wrong, right, right.
    # Bins of width 1/15: 0.9 -> (0.8667, 0.9333], 0.6 -> (0.5333, 0.6]. Bin 1: acc 0.5 vs conf 0.9 -> 0.4,
    # weight 1/2; bin 2: acc 1.0 vs conf 0.6 -> 0.4, weight 1/2. ECE = 0.4 = 40%.
    def logit(p):  # two-class logits whose softmax max is p on class 0
        return [math.log(p / (1 - p)), 0.0]

    logits = torch.tensor([logit(0.9), logit(0.9), logit(0.6), logit(0.6)])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(40.0)
    # perfectly calibrated: confidence 0.75 and 3 of 4 right
    calibrated = torch.tensor([logit(0.75)] * 4)
    assert expected_calibration_error(calibrated, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-4)


def test_ece_pools_images_within_a_bin_only():
    def logit(p):
        return [math.log(p / (1 - p)), 0.0]

    # 0.59 and 0.55 share the bin (8/15, 9/15]: accuracy 0.5 vs mean confidence 0.57 -> 7%
    same = torch.tensor([logit(0.59), logit(0.55)])
    assert expected_calibration_error(same, torch.tensor([0, 1])) == pytest.approx(7.0, abs=1e-6)
    # 0.59 and 0.62 fall in different bins: |1 - 0.59| / 2 + |0 - 0.62| / 2 = 51.5%
    split = torch.tensor([logit(0.59), logit(0.62)])
    assert expected_calibration_error(split, torch.tensor([0, 1])) == pytest.approx(51.5, abs=1e-6)


def test_misclassification_auroc():
    # predictions: class 0 with confidences from logits; right ones are more confident -> AUROC 100
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.5, 0.0], [0.2, 0.0]])
    assert misclassification_auroc(logits, torch.tensor([0, 0, 1, 1])) == pytest.approx(100.0)
    assert misclassification_auroc(logits, torch.tensor([1, 1, 0, 0])) == pytest.approx(0.0)
    assert math.isnan(misclassification_auroc(logits, torch.zeros(4, dtype=torch.long)))  # all right


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}


def test_groups_average_within_each_net_first():
    def net(a, b, c):
        return {s: {m: v for m in METRIC_NAMES} for s, v in zip(["mnist", "noise", "mine"], [a, b, c])}

    per_net = [net(60.0, 100.0, 80.0), net(70.0, 90.0, 50.0)]
    out = summarize_ood(per_net, {"mnist": "near", "noise": "far"})
    assert set(out) == {"all", "near", "far", "mnist", "noise", "mine"}
    assert out["all"]["auroc"] == pytest.approx({"mean": (80.0 + 70.0) / 2, "std": 5.0})
    assert out["near"]["fpr95_out"] == pytest.approx({"mean": 65.0, "std": 5.0})
    assert out["mine"]["auroc"] == pytest.approx({"mean": 65.0, "std": 15.0})
    assert group_members(["mine"], {}) == {"all": ["mine"]}  # empty groups are left out
