"""The ConvNet of the dataset-distillation literature, with a name -> builder registry."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trustdd.registry import Registry

NETWORKS: Registry = Registry("network.name")
NORMS = ("instance", "batch", "none")


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network: stored next to expert buffers and distilled sets."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instance"

    def build(self) -> nn.Module:
        return NETWORKS.get(self.name)(self)


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # Instance norm with learnable affine, written as GroupNorm(groups = channels) as in the DD papers.
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"network.norm: unknown value {kind!r}; valid choices: {', '.join(NORMS)}")


class ConvNet(nn.Module):
    """depth x [conv3x3(width) -> norm -> ReLU -> avgpool2x2] -> linear.

    28x28 inputs get a padding of 3 in the first conv so that they act as 32x32, as in the DC/DSA/MTT code.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = 32 if spec.image_size == 28 else spec.image_size
        in_ch = spec.channels
        for d in range(spec.depth):
            padding = 3 if (d == 0 and spec.image_size == 28) else 1
            layers += [
                nn.Conv2d(in_ch, spec.width, 3, padding=padding),
                _norm_layer(spec.norm, spec.width),
                nn.ReLU(inplace=False),
                nn.AvgPool2d(2),
            ]
            in_ch = spec.width
            size //= 2
        if size < 1:
            raise ValueError(f"network.depth: {spec.depth} pools a {spec.image_size}px image to nothing")
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(spec.width * size * size, spec.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


NETWORKS.register("convnet")(ConvNet)


def init_network(spec: NetSpec, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """Build ``spec`` with weights drawn from ``seed`` only (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = spec.build()
    return net.to(device)


def flat_params(net: nn.Module) -> torch.Tensor:
    """All trainable parameters as one detached float32 vector, in ``net.parameters()`` order."""
    return torch.cat([p.detach().reshape(-1).float() for p in net.parameters()])


def unflatten_params(net: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector back into ``{name: tensor}`` for ``torch.func.functional_call``."""
    named = list(net.named_parameters())
    total = sum(p.numel() for _, p in named)
    if flat.numel() != total:
        raise ValueError(f"flat parameter vector has {flat.numel()} values, the network has {total}")
    out, offset = {}, 0
    for name, p in named:
        out[name] = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out
