"""What a distillation method returns (:class:`DistilledSet`, with the :class:`StartingSets` it began
from) and the file the distill stage writes and evaluation reads, ``data/distilled/distilled.pt``
(:class:`DistilledFile`). Kept apart from the methods, so that the evaluate stage, which reads the set,
does not depend on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trustdd.artifacts import Artifact
from trustdd.data.images import InputTransform
from trustdd.nn.networks import NetSpec


@dataclass(frozen=True)
class StartingSets:
    """What a method started from (its real-image initialisation and starting lr), kept with the result so
    that evaluation can train on it too: ``distilled minus init`` is what the distillation itself bought."""

    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor
    lr: float
    y_soft: torch.Tensor | None = None  # the starting soft labels, when the method uses them

    @staticmethod
    def of(x_in: torch.Tensor, y_in: torch.Tensor, x_out: torch.Tensor, lr: float, y_soft: torch.Tensor | None = None) -> StartingSets:
        def cpu(t):
            return None if t is None else t.detach().cpu().clone()

        return StartingSets(cpu(x_in), cpu(y_in), cpu(x_out), float(lr), cpu(y_soft))

    def to_dict(self) -> dict:
        d = {"x_in": self.x_in, "y_in": self.y_in, "x_out": self.x_out, "lr": self.lr}
        return d if self.y_soft is None else {**d, "y_soft": self.y_soft}


@dataclass
class DistilledSet:
    """A method's result; the same fields whatever the method, so evaluation never asks which made it."""

    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor
    lr: float  # the lr a net should train on this set with (learned by MTT; the inner-loop lr for DSA)
    method: str
    start: StartingSets
    history: list[dict] = field(default_factory=list)  # one record per logging window (see LossLog)
    seconds: list[float] = field(default_factory=list)  # wall time at the end of each window (not reproducible)
    y_soft: torch.Tensor | None = None  # soft labels (N x K class probabilities), if any; y_in keeps the classes


@dataclass(frozen=True)
class DistilledFile(Artifact):
    """``data/distilled/distilled.pt``: ``x_in`` float32 (K*ipc) x C x H x W and ``x_out`` (K*ipc or 0
    images) in the networks' input space, ``y_in`` int64 (the class each image was drawn for), ``lr`` (the
    lr to train on the set with), ``method``, ``init`` (what the method started from: ``{x_in, y_in, x_out,
    lr[, y_soft]}``, which evaluation trains as the ``init`` set), ``y_soft`` float32 (K*ipc) x K class
    probabilities when the method made soft labels, ``dataset``, ``classes`` (the class names, index =
    label), ``net`` (the NetSpec fields of the network it was distilled with) and the input transform
    (``mean``, ``std``, ``zca``). Files made elsewhere may lack the optional fields (None or empty here).
    ``trustdd.api.load`` is the public way to read one."""

    PATH = Path("data/distilled/distilled.pt")

    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor | None
    lr: float | None
    method: str
    init: dict | None = None
    y_soft: torch.Tensor | None = None
    dataset: str = ""
    transform: InputTransform | None = None
    classes: tuple[str, ...] = ()
    net: dict | None = None  # NetSpec's fields

    @classmethod
    def of(cls, result: DistilledSet, dataset: str, transform: InputTransform, classes: tuple[str, ...] = (),
           net: NetSpec | None = None) -> DistilledFile:
        return cls(result.x_in, result.y_in, result.x_out, result.lr, result.method, result.start.to_dict(),
                   result.y_soft, dataset, transform, tuple(classes), asdict(net) if net is not None else None)

    def to_dict(self) -> dict:
        d = {"x_in": self.x_in, "y_in": self.y_in, "x_out": self.x_out, "lr": self.lr, "method": self.method}
        if self.init is not None:
            d["init"] = self.init
        if self.y_soft is not None:
            d["y_soft"] = self.y_soft
        d["dataset"] = self.dataset
        if self.classes:
            d["classes"] = list(self.classes)
        if self.net is not None:
            d["net"] = dict(self.net)
        return {**d, **(self.transform.to_dict() if self.transform is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> DistilledFile:
        init = d.get("init")
        return cls(
            d["x_in"], d["y_in"], d.get("x_out"), d.get("lr"), str(d.get("method", "unknown")),
            init if isinstance(init, dict) else None, d.get("y_soft"), str(d.get("dataset", "")),
            InputTransform.from_dict(d) if "mean" in d else None,
            tuple(str(c) for c in d.get("classes") or ()), dict(d["net"]) if isinstance(d.get("net"), dict) else None,
        )
