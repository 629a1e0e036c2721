import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from trustdd.metrics import mean_std, ood_metrics
from trustdd.scores import SCORES


def test_hand_computed_case():
    # ranking (desc): .9 I, .8 I, .7 I, .65 O, .6 I, .5 O
    m = ood_metrics(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.65, 0.5]))
    assert m["auroc"] == pytest.approx(100 * 7 / 8)  # 7 of 8 (InD, OOD) pairs ordered right
    assert m["aupr_in"] == pytest.approx(100 * (1 + 1 + 1 + 4 / 5) / 4)
    assert m["aupr_out"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # accepting 95% of 4 InD images means accepting all 4 (threshold 0.6): OOD 0.65 gets in
    assert m["fpr95"] == pytest.approx(50.0)


def test_perfect_and_inverted_separation():
    s_in, s_out = torch.tensor([5.0, 6.0, 7.0]), torch.tensor([1.0, 2.0])
    perfect = ood_metrics(s_in, s_out)
    assert perfect == pytest.approx({"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0, "fpr95": 0.0})
    inverted = ood_metrics(s_out, s_in)
    assert inverted["auroc"] == pytest.approx(0.0)
    assert inverted["fpr95"] == pytest.approx(100.0)


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
    assert m["fpr95"] == pytest.approx(100 * (s_out >= threshold).mean())


def test_empty_side_is_an_error():
    with pytest.raises(ValueError, match="both sides"):
        ood_metrics(torch.tensor([1.0]), torch.tensor([]))


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}


def test_scores_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    msp = SCORES.get("msp")()(logits)
    assert torch.allclose(msp, torch.tensor([0.5, 1 / (1 + np.exp(-2))], dtype=torch.float32))
    energy = SCORES.get("energy")()(logits)
    assert torch.allclose(energy, torch.logsumexp(logits, dim=1))
    hot = SCORES.get("energy")(temperature=2.0)(logits)
    assert torch.allclose(hot, 2 * torch.logsumexp(logits / 2, dim=1))
