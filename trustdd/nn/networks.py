"""The networks of the dataset-distillation literature, with a name -> builder registry.

Registered names (``network.name``): ``convnet`` (the DC/DSA/MTT ConvNet, the default) and the nets those
papers use for cross-architecture evaluation: ``resnet18``, ``vgg11``, ``alexnet``, ``lenet`` and ``mlp``.
Every net is a ``features`` module (images -> N x D, exposed as ``embed``) followed by a linear
``classifier``, so ``net(x) == net.classifier(net.embed(x))``. ``width``/``depth`` only shape the ConvNet.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

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


def check_norm(kind: str) -> None:
    """The rule of ``network.norm`` (the params check and :func:`_norm_layer` apply it)."""
    if kind not in NORMS:
        raise ValueError(f"network.norm: unknown value {kind!r}; valid choices: {', '.join(NORMS)}")


def _norm_layer(kind: str, channels: int) -> nn.Module:
    check_norm(kind)
    if kind == "instance":
        # Instance norm with learnable affine, written as GroupNorm(groups = channels) as in the DD papers.
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _conv_block(in_ch: int, out_ch: int, kernel: int, padding: int, norm: str) -> list[nn.Module]:
    """conv -> norm -> ReLU (``norm`` is a :data:`NORMS` value)."""
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=padding), _norm_layer(norm, out_ch), nn.ReLU(inplace=False)]


def _spatial_size(spec: NetSpec, layers: list[nn.Module]) -> int:
    """Side of the feature map that ``layers`` (convs and pools) make of a ``spec.image_size`` input."""
    size = spec.image_size
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
            size = (size + 2 * p - k) // s + 1
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            size = (size - layer.kernel_size) // layer.stride + 1
        if size < 1:
            raise ValueError(
                f"network.name: {spec.name!r} cannot take {spec.image_size}x{spec.image_size} images "
                "(its feature map shrinks to nothing)"
            )
    return size


class FeatureNet(nn.Module):
    """Base: ``features`` (images -> N x D, flattened) then a linear ``classifier``."""

    features: nn.Module
    classifier: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@NETWORKS.register("convnet")
class ConvNet(FeatureNet):
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
            layers += [*_conv_block(in_ch, spec.width, 3, padding, spec.norm), nn.AvgPool2d(2)]
            in_ch = spec.width
            size //= 2
        if size < 1:
            raise ValueError(f"network.depth: {spec.depth} pools a {spec.image_size}px image to nothing")
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(spec.width * size * size, spec.num_classes)


@NETWORKS.register("resnet18")
class ResNet18(FeatureNet):
    """torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 conv1, no max-pool); ignores width/depth."""

    def __init__(self, spec: NetSpec) -> None:
        from torchvision.models.resnet import BasicBlock, ResNet  # here, not at the top: torchvision takes ~3 s to import

        super().__init__()
        net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=spec.num_classes, norm_layer=partial(_norm_layer, spec.norm))
        net.conv1 = nn.Conv2d(spec.channels, 64, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
        net.maxpool = nn.Identity()
        body = OrderedDict((name, module) for name, module in net.named_children() if name != "fc")
        body["flatten"] = nn.Flatten()
        self.features = nn.Sequential(body)  # conv1, bn1, relu, maxpool, layer1..4, global avgpool, flatten: 512-D
        self.classifier = net.fc


@NETWORKS.register("vgg11")
class VGG11(FeatureNet):
    """VGG-11 as in the DC code (3x3 conv -> norm -> ReLU, max-pools, one linear layer); ignores width/depth."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = spec.channels
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            padding = 3 if (not layers and spec.image_size == 28) else 1
            layers += _conv_block(in_ch, v, 3, padding, spec.norm)
            in_ch = v
        size = _spatial_size(spec, layers)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(in_ch * size * size, spec.num_classes)


@NETWORKS.register("alexnet")
class AlexNet(FeatureNet):
    """AlexNet as in the DC code (5 convs with norm, 3 max-pools, one linear layer); ignores width/depth."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        pool = partial(nn.MaxPool2d, 2)
        layers: list[nn.Module] = [
            *_conv_block(spec.channels, 128, 5, 4 if spec.image_size == 28 else 2, spec.norm), pool(),
            *_conv_block(128, 192, 5, 2, spec.norm), pool(),
            *_conv_block(192, 256, 3, 1, spec.norm),
            *_conv_block(256, 192, 3, 1, spec.norm),
            *_conv_block(192, 192, 3, 1, spec.norm), pool(),
        ]  # fmt: skip
        size = _spatial_size(spec, layers)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(192 * size * size, spec.num_classes)


@NETWORKS.register("lenet")
class LeNet(FeatureNet):
    """LeNet-5 as in the DC code (2 convs, 2 max-pools, fc 120 -> 84); ignores width/depth/norm."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        convs: list[nn.Module] = [
            nn.Conv2d(spec.channels, 6, 5, padding=2 if spec.image_size == 28 else 0), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        ]  # fmt: skip
        size = _spatial_size(spec, convs)
        fcs = [nn.Linear(16 * size * size, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU()]
        self.features = nn.Sequential(*convs, nn.Flatten(), *fcs)  # 84-D
        self.classifier = nn.Linear(84, spec.num_classes)


@NETWORKS.register("mlp")
class MLP(FeatureNet):
    """The DC code's MLP (flatten -> 128 -> 128, ReLUs); ignores width/depth/norm."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        flat = spec.channels * spec.image_size * spec.image_size
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.classifier = nn.Linear(128, spec.num_classes)


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
