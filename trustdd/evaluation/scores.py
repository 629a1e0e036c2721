"""OOD score functions, one small class each, in a registry. Higher score = more in-distribution.

A score reads a :class:`Probe`: one trained net looking at one image set, whose penultimate features
and logits are computed once and shared by every score. Scores that need more than logits (ODIN
perturbs the input, KNN compares features with a bank) get the net and the inputs from the probe too.
``fit`` is called once per trained net with the InD images it was trained on and their labels (KNN keeps
their features); the other scores ignore it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trustdd.options import Plugin
from trustdd.registry import Registry

SCORES: Registry[type] = Registry("evaluate.scores")


class Probe:
    """One net looking at one image set (network inputs, N x C x H x W). Features and logits are computed
    in eval mode, batched, on the net's device, and kept on the CPU.

    ``pixel_scale`` is how far one unit of [0, 1] pixel value moves each input channel (1 / std for
    normalised inputs), so input perturbations can be given in pixel units.
    """

    def __init__(self, net: nn.Module, x: torch.Tensor, pixel_scale: tuple[float, ...], batch_size: int = 500):
        self.net, self.x, self.pixel_scale, self.batch_size = net, x, pixel_scale, batch_size
        self._features: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def batches(self):
        for i in range(0, self.x.shape[0], self.batch_size):
            yield self.x[i : i + self.batch_size].to(self.device)

    @torch.no_grad()
    def _run(self) -> None:
        self.net.eval()
        feats, logits = [], []
        for xb in self.batches():
            f = self.net.embed(xb)
            feats.append(f.float().cpu())
            logits.append(self.net.classifier(f).float().cpu())
        self._features, self._logits = torch.cat(feats), torch.cat(logits)

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:
            self._run()
        return self._features

    @property
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._run()
        return self._logits


class Score(Plugin):
    """Base class: ``fit`` (optional) then ``__call__(probe) -> N scores``. Built by name with
    ``trustdd.options.make(SCORES, name, options)``."""

    options_key = "evaluate.score_options.{name}"

    def check(self, num_train: int | None = None, **context) -> None:
        """Raise ValueError naming ``evaluate.score_options.<name>.<option>``, its value and what is valid, if
        an option is out of range (or, when ``num_train`` is known, cannot work with that many fit images).
        ``trustdd.options.make`` runs it without ``num_train``."""

    def fit(self, net: nn.Module, train: Probe, labels: torch.Tensor) -> None:
        """Called once per trained net with the InD images it was trained on and their class labels (int64,
        one per image; class-conditional scores such as Mahalanobis fit per-class statistics from them)."""

    def __call__(self, probe: Probe) -> torch.Tensor:
        raise NotImplementedError


@SCORES.register("msp")
@dataclass
class MaxSoftmax(Score):
    """Maximum softmax probability (Hendrycks & Gimpel 2017)."""

    def __call__(self, probe: Probe) -> torch.Tensor:
        return probe.logits.softmax(dim=1).max(dim=1).values


@SCORES.register("max_logit")
@dataclass
class MaxLogit(Score):
    """Largest logit (Hendrycks et al. 2022, "Scaling OOD detection")."""

    def __call__(self, probe: Probe) -> torch.Tensor:
        return probe.logits.max(dim=1).values


@SCORES.register("energy")
@dataclass
class Energy(Score):
    """Negative free energy, ``T * logsumexp(logits / T)`` (Liu et al. 2020)."""

    temperature: float = 1.0

    def check(self, num_train: int | None = None, **context) -> None:
        _positive("energy", "temperature", self.temperature)

    def __call__(self, probe: Probe) -> torch.Tensor:
        return self.temperature * torch.logsumexp(probe.logits / self.temperature, dim=1)


@SCORES.register("odin")
@dataclass
class ODIN(Score):
    """ODIN (Liang et al. 2018): temperature-scaled MSP of the input nudged by ``noise`` (in [0, 1] pixel
    units) in the direction that raises the predicted class's softmax. Defaults: T 1000, noise 0.0014,
    the paper's and OpenOOD's CIFAR values."""

    temperature: float = 1000.0
    noise: float = 0.0014

    def check(self, num_train: int | None = None, **context) -> None:
        _positive("odin", "temperature", self.temperature)
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"evaluate.score_options.odin.noise: invalid value {self.noise!r}; expected a finite number >= 0")

    def __call__(self, probe: Probe) -> torch.Tensor:
        net, out = probe.net, []
        net.eval()
        step = self.noise * torch.tensor(probe.pixel_scale, device=probe.device).view(1, -1, 1, 1)
        for xb in probe.batches():
            with torch.enable_grad():
                xb = xb.clone().requires_grad_(True)
                logits = net(xb) / self.temperature
                loss = F.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")  # -log S_yhat(x; T)
                (grad,) = torch.autograd.grad(loss, xb)
            with torch.no_grad():
                nudged = xb.detach() - step * grad.sign()
                out.append((net(nudged) / self.temperature).softmax(dim=1).max(dim=1).values.float().cpu())
        return torch.cat(out)


@SCORES.register("knn")
@dataclass
class KNN(Score):
    """Deep nearest neighbours (Sun et al. 2022): minus the distance from the L2-normalised penultimate
    features to the k-th nearest InD training feature. The bank is the set the net was trained on (here
    the distilled InD images). Default k 1: the paper keeps k/N near 0.1% (k 50 of 50,000); a set of
    ipc x classes images gives k 1."""

    k: int = 1
    bank: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)  # fitted, not an option

    def check(self, num_train: int | None = None, **context) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"evaluate.score_options.knn.k: invalid value {self.k!r}; expected an integer >= 1")
        if num_train is not None and self.k > num_train:
            raise ValueError(
                f"evaluate.score_options.knn.k: invalid value {self.k!r}; expected an integer from 1 to {num_train} "
                "(the number of InD images the evaluation nets train on)"
            )

    def fit(self, net: nn.Module, train: Probe, labels: torch.Tensor) -> None:
        self.bank = F.normalize(train.features, dim=1)

    def __call__(self, probe: Probe) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("knn: fit(net, train_probe) must run before scoring")
        dist = torch.cdist(F.normalize(probe.features, dim=1), self.bank)
        return -dist.kthvalue(self.k, dim=1).values


def _positive(score: str, option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"evaluate.score_options.{score}.{option}: invalid value {value!r}; expected a finite number > 0")
