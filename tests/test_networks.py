import pytest
import torch

from trustdd.nn.networks import NETWORKS, NORMS, NetSpec, flat_params, init_network

SHAPES = [(1, 28), (3, 32), (3, 64)]  # Fashion-MNIST, CIFAR, Tiny ImageNet
NAMES = NETWORKS.names()


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _batch(channels: int, size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_registry_lists_the_cross_architecture_nets():
    assert set(NAMES) == {"convnet", "resnet18", "vgg11", "alexnet", "lenet", "mlp"}


@pytest.mark.parametrize("channels,size", SHAPES, ids=[f"{c}x{s}" for c, s in SHAPES])
@pytest.mark.parametrize("name", NAMES)
def test_output_and_embedding_shapes(name, channels, size):
    net = init_network(NetSpec(name, channels, size, num_classes=7), seed=0)
    x = _batch(channels, size)
    feats = net.embed(x)
    out = net(x)
    assert out.shape == (2, 7)
    assert feats.dim() == 2 and feats.shape[0] == 2
    assert net.classifier.in_features == feats.shape[1]
    assert isinstance(net.classifier, torch.nn.Linear)
    assert torch.equal(net.classifier(feats), out)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_runs(name, norm):
    net = init_network(NetSpec(name, 3, 32, 10, norm=norm), seed=0)
    assert net(_batch(3, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_init_is_seeded_and_leaves_global_rng_alone(name):
    spec = NetSpec(name, 1, 28, 10)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = (flat_params(init_network(spec, seed)) for seed in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_first_layer(name):
    net = init_network(NetSpec(name, 1, 28, 10), seed=0)
    net(_batch(1, 28)).square().mean().backward()
    first = next(net.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_resnet18_parameter_count():
    # CIFAR-stem ResNet-18 with batch norm, 3x32x32 in, 10 classes (every conv is bias-free; a norm layer
    # has 2 params per channel):
    #   stem:    conv 3->64 3x3 = 1,728; bn 128                                          ->      1,856
    #   layer1:  2 blocks x (2 convs 64->64 3x3 = 2 x 36,864, 2 bns 2 x 128)             ->    147,968
    #   layer2:  block 1: conv 64->128 73,728 + conv 128->128 147,456 + downsample 1x1
    #            8,192 + 3 bns 768 = 230,144; block 2: 2 x 147,456 + 512 = 295,424       ->    525,568
    #   layer3:  block 1: 294,912 + 589,824 + 32,768 + 1,536 = 919,040;
    #            block 2: 2 x 589,824 + 1,024 = 1,180,672                                ->  2,099,712
    #   layer4:  block 1: 1,179,648 + 2,359,296 + 131,072 + 3,072 = 3,673,088;
    #            block 2: 2 x 2,359,296 + 2,048 = 4,720,640                              ->  8,393,728
    #   fc:      512 x 10 + 10                                                            ->      5,130
    #   total                                                                                11,173,962
    net = NetSpec("resnet18", 3, 32, 10, norm="batch").build()
    assert _count(net) == 11_173_962
    assert net.classifier.in_features == 512


def test_convnet_parameter_count_unchanged():
    # 3 x conv3x3 (1->32: 320, 32->32: 9,248, 32->32: 9,248) + 3 instance norms (64 each) + linear 32*4*4 -> 10.
    net = NetSpec("convnet", 1, 28, 10, width=32, depth=3).build()
    assert _count(net) == 320 + 9_248 * 2 + 3 * 64 + (32 * 4 * 4 * 10 + 10) == 24_138


@pytest.mark.parametrize("name", ["vgg11", "lenet"])
def test_too_small_images_raise_a_named_error(name):
    with pytest.raises(ValueError, match=rf"network\.name: '{name}'.*8x8"):
        NetSpec(name, 3, 8, 10).build()
