"""The distilled set as a user takes it elsewhere: load it, train a net on it, score images for OOD.

    from trustdd import api

    s = api.load("data/distilled/distilled.pt")
    s.images, s.labels, s.classes      # InD images in [0, 1] pixels (N x C x H x W), class indices, names
    s.outliers, s.soft_labels, s.lr    # distilled outliers (0 rows for plain DD), soft labels or None, learned lr
    s.net                              # the NetSpec the set was distilled with

    net = api.train(s)                 # the evaluation protocol: 300 epochs, SGD, DSA, CE + OE
    detector = api.Detector(net, s, score="energy").calibrate(val_images, tpr=0.95)
    detector.scores(images)            # higher = more in-distribution
    detector.is_ood(images)            # True where the score falls below the threshold

Every image handed in or out is a float tensor in [0, 1] pixel space (or uint8), N x C x H x W at the set's
shape: the set's own input transform (normalisation, ZCA where the set was whitened) is applied inside.
``docs/api.md`` walks through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trustdd.data.images import InputTransform
from trustdd.distill.distilled import DistilledFile
from trustdd.evaluation.scores import SCORES, Probe, Score
from trustdd.nn.augment import DSA
from trustdd.nn.networks import NetSpec, init_network
from trustdd.nn.training import TrainConfig, seed_from, train_network
from trustdd.options import make
from trustdd.runtime import generator

__all__ = ["Distilled", "load", "train", "Detector"]


@dataclass(frozen=True)
class Distilled:
    """A distilled set, read from a ``distilled.pt`` the distill stage wrote (:func:`load`)."""

    inputs: torch.Tensor  # InD images as the nets see them (normalised; ZCA-whitened where the set was)
    labels: torch.Tensor  # int64, the class each image was distilled for
    outlier_inputs: torch.Tensor  # distilled outliers as the nets see them; 0 rows for plain DD
    transform: InputTransform  # [0, 1] or uint8 images -> inputs (and ``inverse`` back)
    lr: float | None  # the lr to train on the set with (MTT learns it); None where the file has none
    net: NetSpec | None  # the network it was distilled with; None in files from before it was stored
    classes: tuple[str, ...]  # class names, index = label; () in files from before they were stored
    soft_labels: torch.Tensor | None = None  # N x K class probabilities, when the method made them
    method: str = ""
    dataset: str = ""

    @property
    def images(self) -> torch.Tensor:
        """The InD images in [0, 1] pixel space (clamped), to view or save."""
        return self.transform.inverse(self.inputs)

    @property
    def outliers(self) -> torch.Tensor:
        """The distilled outliers in [0, 1] pixel space."""
        return self.transform.inverse(self.outlier_inputs)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.inputs.shape[1:])

    def to_inputs(self, images: torch.Tensor, what: str = "images") -> torch.Tensor:
        """[0, 1] float or uint8 images of this set's shape -> network inputs; a clear error otherwise."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{what}: expected a tensor N x {' x '.join(map(str, self.shape))} "
                             f"(the set's images), got {got}")
        if images.is_floating_point() and images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"{what}: float images must be in [0, 1] pixel space (got values from "
                             f"{float(images.min()):.3g} to {float(images.max()):.3g}); pass uint8 or x / 255")
        return self.transform(images)


def load(path: str | Path = DistilledFile.PATH) -> Distilled:
    """Read a ``distilled.pt``. Raises FileNotFoundError, or ValueError when the file is not a trustdd
    distilled set (MTT's images/labels pairs carry no transform: evaluate them with the pipeline)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; expected a distilled.pt that the distill stage wrote")
    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or not {"x_in", "y_in", "mean", "std"} <= set(d):
        raise ValueError(f"{str(path)!r} is not a trustdd distilled set (a dict with x_in, y_in, mean, std: "
                         "trustdd.distill.distilled.DistilledFile)")
    f = DistilledFile.from_dict(d)
    x_out = f.x_out if f.x_out is not None else f.x_in[:0]
    return Distilled(
        inputs=f.x_in.float(), labels=f.y_in.long(), outlier_inputs=x_out.float(), transform=f.transform,
        lr=f.lr, net=NetSpec(**f.net) if f.net else None, classes=tuple(f.classes),
        soft_labels=f.y_soft, method=f.method, dataset=f.dataset,
    )


def train(
    distilled: Distilled,
    seed: int = 0,
    index: int = 0,
    epochs: int = 300,
    lr: float | None = None,
    net: NetSpec | None = None,
    lambda_oe: float = 0.5,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A fresh net trained on the set with the project's evaluation protocol: SGD with momentum and weight
    decay, lr x 0.1 halfway, DSA on every batch, CE on the InD images (or to the soft labels) plus
    ``lambda_oe`` x Outlier Exposure on the distilled outliers. ``lr`` defaults to the set's learned lr
    and ``net`` to the network it was distilled with. ``seed`` and ``index`` draw what the evaluate stage
    draws for net ``index`` under params ``seed`` (weights, batch order, augmentation). Returned in eval mode."""
    spec = net or distilled.net
    if spec is None:
        raise ValueError("net: this distilled.pt does not say which network it was distilled with; pass net=NetSpec(...)")
    lr = distilled.lr if lr is None else lr
    if lr is None or not lr > 0:
        raise ValueError(f"lr: invalid value {lr!r}; expected a number > 0 (this set carries no learned lr: pass lr=)")
    if epochs < 1:
        raise ValueError(f"epochs: invalid value {epochs!r}; expected an integer >= 1")
    device = torch.device(device)
    g = generator(seed, "evaluate", index)  # the evaluate stage's stream for net `index`
    model = init_network(spec, seed_from(g), device)
    x_in, x_out = distilled.inputs.to(device), distilled.outlier_inputs.to(device)
    targets = (distilled.soft_labels if distilled.soft_labels is not None else distilled.labels).to(device)
    cfg = TrainConfig(epochs=epochs, lr=float(lr), batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                      lambda_oe=lambda_oe, outlier_ratio=x_out.shape[0] / x_in.shape[0] if x_out.shape[0] else 0.0)
    train_network(model, x_in, targets, x_out, cfg, g, DSA())
    return model.eval()


class Detector:
    """An OOD detector: one score of ``trustdd.evaluation.scores.SCORES`` (msp, max_logit, energy, odin, knn,
    with its options, e.g. ``Detector(net, s, "odin", temperature=1000)``) on a trained net, fitted on the
    distilled InD images where the score needs them (knn's feature bank). :meth:`calibrate` sets the
    threshold that keeps a chosen share of InD images (TPR, the usual 95%)."""

    def __init__(self, net: nn.Module, distilled: Distilled, score: str = "msp", **options) -> None:
        self.net, self.distilled = net.eval(), distilled
        self.score: Score = make(SCORES, score, options or None)
        self.score.check(num_train=int(distilled.inputs.shape[0]))
        self.pixel_scale = tuple(1.0 / s for s in distilled.transform.std)
        device = next(net.parameters()).device
        self.score.fit(net, Probe(net, distilled.inputs.to(device), self.pixel_scale), distilled.labels)
        self.threshold: float | None = None

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """One score per image (higher = more in-distribution), on the CPU."""
        x = self.distilled.to_inputs(images)
        return self.score(Probe(self.net, x, self.pixel_scale))

    def calibrate(self, ind_images: torch.Tensor, tpr: float = 0.95) -> "Detector":
        """Set the threshold so that a share ``tpr`` of ``ind_images`` (held-out InD images) score at or
        above it; returns the detector."""
        if not 0 < tpr <= 1:
            raise ValueError(f"tpr: invalid value {tpr!r}; expected a number in (0, 1]")
        s = self.scores(ind_images).double()
        if s.numel() == 0:
            raise ValueError("ind_images: no images to calibrate on")
        # the k-th highest score, k = ceil(tpr * n): exactly k images are at or above it (ties aside)
        k = max(1, int(torch.ceil(torch.tensor(tpr * s.numel())).item()))
        self.threshold = float(s.sort(descending=True).values[k - 1])
        return self

    def is_ood(self, images: torch.Tensor) -> torch.Tensor:
        """True where an image's score falls below the calibrated threshold."""
        if self.threshold is None:
            raise RuntimeError("is_ood: call calibrate(ind_images, tpr) first to set the threshold")
        return self.scores(images) < self.threshold
