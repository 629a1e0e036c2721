"""Each OOD score on a tiny net whose answer can be worked out by hand."""

import math

import pytest
import torch
from torch import nn

from trustdd.evaluation.scores import KNN, SCORES, Probe
from trustdd.options import make


class Linear2(nn.Module):
    """Features = the two pixels of a 1 x 1 x 2 image; logits = features (identity classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.eye(2))
        self.embed_calls = 0

    def embed(self, x):
        self.embed_calls += 1
        return x.flatten(1)

    def forward(self, x):
        return self.classifier(self.embed(x))


def probe(rows, net=None):
    return Probe(net or Linear2(), torch.tensor(rows, dtype=torch.float32).view(-1, 1, 1, 2), pixel_scale=(1.0,))


LOGITS = [[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]]


def test_registry_holds_the_five_scores():
    assert {"msp", "max_logit", "energy", "odin", "knn"} <= set(SCORES.names())  # others may be registered


def test_msp_max_logit_and_energy_hand_computed():
    p = probe(LOGITS)
    assert torch.allclose(make(SCORES, "msp")(p), torch.tensor([0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-2))]))
    assert torch.allclose(make(SCORES, "max_logit")(p), torch.tensor([0.0, 2.0, 3.0]))
    logits = torch.tensor(LOGITS)
    assert torch.allclose(make(SCORES, "energy")(p), torch.logsumexp(logits, dim=1))
    hot = make(SCORES, "energy", {"temperature": 2})(p)
    assert torch.allclose(hot, 2 * torch.logsumexp(logits / 2, dim=1))
    assert hot[0].item() == pytest.approx(2 * math.log(2))  # T log(sum of two e^0)


def test_probe_runs_the_net_once_for_all_logit_scores():
    net = Linear2()
    p = probe(LOGITS, net)
    for name in ["msp", "max_logit", "energy"]:
        make(SCORES, name)(p)
    assert net.embed_calls == 1


def test_odin_without_noise_is_temperature_scaled_msp():
    p = probe(LOGITS)
    got = make(SCORES, "odin", {"temperature": 10, "noise": 0})(p)
    assert torch.allclose(got, (torch.tensor(LOGITS) / 10).softmax(1).max(1).values)


def test_odin_noise_moves_the_input_towards_the_predicted_class():
    # x = (1, 0): class 0 predicted. With logits = x, the CE gradient is (p0 - 1, p1) / T, whose sign is
    # (-, +); ODIN subtracts noise x sign: x~ = (1 + e, -e), so the scaled MSP is sigma((1 + 2e) / T).
    e, t = 0.1, 2.0
    got = make(SCORES, "odin", {"temperature": t, "noise": e})(probe([[1.0, 0.0]]))
    assert got.item() == pytest.approx(1 / (1 + math.exp(-(1 + 2 * e) / t)), rel=1e-6)


def test_odin_noise_is_in_pixel_units():
    # inputs normalised with std 0.5 move 2 units per pixel unit: same as noise 2e on unit-scale inputs
    x = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    scaled = make(SCORES, "odin", {"temperature": 1, "noise": 0.1})(Probe(Linear2(), x, pixel_scale=(2.0,)))
    plain = make(SCORES, "odin", {"temperature": 1, "noise": 0.2})(Probe(Linear2(), x, pixel_scale=(1.0,)))
    assert torch.allclose(scaled, plain)


def test_knn_distance_on_the_unit_sphere():
    net = Linear2()
    train = probe([[1.0, 0.0], [0.0, 3.0]], net)  # normalised bank: (1, 0), (0, 1)
    knn = make(SCORES, "knn", {"k": 1})
    knn.fit(net, train, torch.zeros(len(train.x), dtype=torch.long))
    got = knn(probe([[2.0, 0.0], [1.0, 1.0]], net))
    # (2, 0) -> (1, 0): distance 0; (1, 1) -> (.707, .707): distance sqrt(2 - sqrt 2) to both
    assert torch.allclose(got, torch.tensor([0.0, -math.sqrt(2 - math.sqrt(2))]), atol=1e-6)
    second = make(SCORES, "knn", {"k": 2})
    second.fit(net, train, torch.zeros(len(train.x), dtype=torch.long))
    assert second(probe([[2.0, 0.0]], net)).item() == pytest.approx(-math.sqrt(2), abs=1e-6)


def test_knn_must_be_fitted_and_k_must_fit_the_set():
    with pytest.raises(RuntimeError, match="fit"):
        KNN()(probe(LOGITS))
    with pytest.raises(ValueError, match=r"evaluate.score_options.knn.k: invalid value 101; expected an integer from 1 to 100"):
        make(SCORES, "knn", {"k": 101}).check(num_train=100)


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        (
            "odin",
            {"temperture": 5},
            r"unknown key\(s\) evaluate.score_options.odin.temperture; valid keys: temperature, noise",
        ),
        ("msp", {"temperature": 5}, r"unknown key\(s\) evaluate.score_options.msp.temperature; valid keys: none"),
        ("knn", {"k": 2.5}, r"evaluate.score_options.knn.k: invalid value 2.5; expected an integer"),
        ("energy", {"temperature": "hot"}, r"evaluate.score_options.energy.temperature: invalid value 'hot'; expected a number"),
        ("energy", [1], r"evaluate.score_options.energy: invalid value \[1\]; expected a mapping of temperature"),
        ("mahalanobis", {}, r"evaluate.scores: unknown value 'mahalanobis'; valid choices: msp, max_logit"),
    ],
)
def test_bad_options_name_the_key(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(SCORES, name, options)


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("energy", {"temperature": 0}, r"energy.temperature: invalid value 0.0; expected a finite number > 0"),
        ("odin", {"noise": -0.1}, r"odin.noise: invalid value -0.1; expected a finite number >= 0"),
    ],
)
def test_out_of_range_options_fail_the_check(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(SCORES, name, options).check(num_train=10)
