"""trustdd.api: a distilled set read back, a net trained on it with the evaluation protocol, OOD scores and a
threshold at a chosen TPR."""

import dataclasses

import pytest
import torch

from trustdd import api
from trustdd.data.images import InputTransform
from trustdd.distill.distilled import DistilledFile, DistilledSet, StartingSets
from trustdd.evaluation.scores import KNN, MaxSoftmax, Probe
from trustdd.nn.augment import DSA
from trustdd.nn.networks import NetSpec, init_network
from trustdd.nn.training import TrainConfig, seed_from, train_network
from trustdd.options import ParamsError
from trustdd.runtime import generator

SPEC = NetSpec("convnet", channels=1, image_size=28, num_classes=3, width=8, depth=2, norm="instance")
TRANSFORM = InputTransform((0.3,), (0.4,))


def _pixels(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def saved(tmp_path):
    """A distilled.pt as the distill stage writes it: 3 classes x 2 images, 6 outliers, a learned lr."""
    x_in, x_out = TRANSFORM(_pixels(6, 1)), TRANSFORM(_pixels(6, 2))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    result = DistilledSet(x_in, y, x_out, 0.02, "mtt", StartingSets.of(x_in, y, x_out, 0.01))
    path = DistilledFile.of(result, "fashion_mnist", TRANSFORM, ("a", "b", "c"), SPEC).save(tmp_path)
    return path, x_in, x_out, y


def test_load_gives_pixels_inputs_labels_classes_and_the_net(saved):
    path, x_in, x_out, y = saved
    s = api.load(path)
    assert torch.equal(s.inputs, x_in) and torch.equal(s.outlier_inputs, x_out) and torch.equal(s.labels, y)
    assert torch.allclose(s.images, _pixels(6, 1), atol=1e-6) and torch.allclose(s.outliers, _pixels(6, 2), atol=1e-6)
    assert s.classes == ("a", "b", "c") and s.net == SPEC and s.lr == pytest.approx(0.02)
    assert s.soft_labels is None and s.method == "mtt" and s.dataset == "fashion_mnist" and s.shape == (1, 28, 28)


def test_a_file_from_before_classes_and_net_were_stored_loads_and_train_asks_for_the_net(saved, tmp_path):
    path, *_ = saved
    d = torch.load(path, weights_only=True)
    del d["classes"], d["net"]
    torch.save(d, tmp_path / "old.pt")
    s = api.load(tmp_path / "old.pt")
    assert s.classes == () and s.net is None
    with pytest.raises(ValueError, match=r"net: this distilled.pt does not say which network"):
        api.train(s, epochs=1)
    assert isinstance(api.train(s, epochs=1, net=SPEC), torch.nn.Module)


def test_load_refuses_what_is_not_a_distilled_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        api.load(tmp_path / "missing.pt")
    torch.save({"images": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a trustdd distilled set"):
        api.load(tmp_path / "other.pt")


def test_train_is_the_evaluation_protocols_net(saved):
    """The same weights as the protocol's own steps for net `index` under run seed `seed`."""
    s = api.load(saved[0])
    net = api.train(s, seed=5, index=1, epochs=3)
    g = generator(5, "evaluate", 1)
    ref = init_network(SPEC, seed_from(g))
    cfg = TrainConfig(epochs=3, lr=0.02, batch_size=256, momentum=0.9, weight_decay=5e-4, lambda_oe=0.5, outlier_ratio=1.0)
    train_network(ref, s.inputs, s.labels, s.outlier_inputs, cfg, g, DSA())
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name
    other = api.train(s, seed=5, index=2, epochs=3)
    assert not torch.equal(next(iter(other.state_dict().values())), next(iter(net.state_dict().values())))
    assert not net.training


def test_train_refuses_a_bad_lr_or_epochs(saved):
    s = api.load(saved[0])
    with pytest.raises(ValueError, match=r"lr: invalid value -1"):
        api.train(s, lr=-1)
    with pytest.raises(ValueError, match=r"epochs: invalid value 0"):
        api.train(s, epochs=0)
    with pytest.raises(ValueError, match=r"carries no learned lr"):
        api.train(dataclasses.replace(s, lr=None), epochs=1)


def test_detector_scores_are_the_registry_scores_and_the_threshold_keeps_the_asked_tpr(saved):
    s = api.load(saved[0])
    net = api.train(s, epochs=2)
    images = _pixels(40, 3)
    det = api.Detector(net, s, "msp")
    ref = MaxSoftmax()(Probe(net, TRANSFORM(images), (1 / 0.4,)))
    assert torch.equal(det.scores(images), ref)
    det.calibrate(images, tpr=0.95)
    kept = (ref >= det.threshold).float().mean()
    assert kept >= 0.95 and (ref > det.threshold).float().mean() < 0.95  # the 38th highest of 40 scores
    assert torch.equal(det.is_ood(images), ref < det.threshold)
    assert int(det.is_ood(images).sum()) == 2
    knn = api.Detector(net, s, "knn", k=2)  # fitted on the distilled InD images
    bank = KNN(k=2)
    bank.fit(net, Probe(net, s.inputs, (1 / 0.4,)), s.labels)
    assert torch.equal(knn.scores(images), bank(Probe(net, TRANSFORM(images), (1 / 0.4,))))


def test_detector_errors_name_what_is_wrong(saved):
    s = api.load(saved[0])
    net = api.train(s, epochs=1)
    det = api.Detector(net, s)
    with pytest.raises(ValueError, match=r"images: expected a tensor N x 1 x 28 x 28 \(the set's images\), got \(2, 3, 28, 28\)"):
        det.scores(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"images: float images must be in \[0, 1\] pixel space"):
        det.scores(torch.full((2, 1, 28, 28), 3.0))
    with pytest.raises(RuntimeError, match=r"call calibrate"):
        det.is_ood(_pixels(2, 4))
    with pytest.raises(ValueError, match=r"tpr: invalid value 1.5"):
        det.calibrate(_pixels(2, 4), tpr=1.5)
    with pytest.raises(ParamsError, match=r"knn"):
        api.Detector(net, s, "knn", k=0)
    with pytest.raises(ValueError, match=r"k: invalid value 7.*from 1 to 6"):
        api.Detector(net, s, "knn", k=7)
    assert torch.equal(det.scores((_pixels(2, 4) * 255).round().to(torch.uint8)),
                       det.scores((_pixels(2, 4) * 255).round() / 255))  # uint8 and [0, 1] agree
