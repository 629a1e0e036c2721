import math

import pytest
import torch

from trustdd.distill.dsa import _ce_to, set_matching_loss
from trustdd.distill.methods import DistillTask, GradientMatching, gradient_distance, initial_sets, matching_loss
from trustdd.nn.augment import DSA, NoAugment
from trustdd.nn.losses import oe_loss
from trustdd.nn.networks import NetSpec, init_network

SPEC = NetSpec("convnet", channels=1, image_size=8, num_classes=3, width=4, depth=1)


def make_task(ipc=2, pool=0, per_class=6, mixing="blockwise", lambda_oe=0.5):
    g = torch.Generator().manual_seed(0)
    real_y = torch.arange(3).repeat_interleave(per_class)
    # each class is bright in its own image third, so the classes are learnable
    real_x = 0.3 * torch.randn(3 * per_class, 1, 8, 8, generator=g)
    for c in range(3):
        real_x[real_y == c, :, :, c * 2 : c * 2 + 3] += 2.0
    pool_x = torch.randn(pool, 1, 8, 8, generator=g)
    pool_kind = torch.arange(pool) % 2
    return DistillTask(real_x, real_y, pool_x, pool_kind, 2, 3, ipc, SPEC, lambda_oe, 0, torch.device("cpu"), mixing=mixing)


def test_gradient_distance_hand_computed():
    # conv-like 4-D tensor with 2 output rows: row 0 parallel (cos 1), row 1 orthogonal (cos 0);
    # a linear weight with 1 row pointing the opposite way (cos -1); a bias that must be skipped
    g_syn = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2), torch.tensor([[1.0, 2.0]]), torch.tensor([5.0])]
    g_real = [torch.tensor([[3.0, 0.0], [1.0, 0.0]]).view(2, 1, 1, 2), torch.tensor([[-2.0, -4.0]]), torch.tensor([-5.0])]
    # (1 - 1) + (1 - 0) + (1 - (-1)) = 3; the 1-D bias adds nothing
    assert gradient_distance(g_syn, g_real).item() == pytest.approx(3.0, abs=1e-5)
    # a 45 degree angle: 1 - cos(pi/4)
    d = gradient_distance([torch.tensor([[1.0, 0.0]])], [torch.tensor([[1.0, 1.0]])])
    assert d.item() == pytest.approx(1 - math.cos(math.pi / 4), abs=1e-5)
    # scale-invariant: real gradients 10x larger change nothing
    assert gradient_distance(g_syn, [10 * g for g in g_real]).item() == pytest.approx(3.0, abs=1e-5)


def test_matching_loss_is_zero_when_synthetic_batch_is_the_real_batch():
    task = make_task()
    net = init_network(SPEC, seed=1)
    x = task.real_x[:6]
    assert matching_loss(net, x, x.clone(), _ce_to(0), NoAugment(), seed=3).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("loss_name", ["ce", "oe"])
def test_one_outer_step_decreases_the_matching_loss(loss_name):
    # the update DSA makes: one SGD step on the synthetic images lowers their matching loss
    task = make_task()
    net = init_network(SPEC, seed=2)
    loss_fn = _ce_to(1) if loss_name == "ce" else oe_loss
    real = task.real_x[task.real_y == 1]
    syn = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    before = matching_loss(net, real, syn, loss_fn, NoAugment(), seed=0)
    before.backward()
    with torch.no_grad():
        syn -= 0.05 * syn.grad / syn.grad.norm()
    after = matching_loss(net, real, syn, loss_fn, NoAugment(), seed=0)
    assert after.item() < before.item()


def test_one_outer_step_over_all_classes_and_outlier_blocks_decreases_the_total_loss():
    # what one DSA outer step does: both optimisers step on the summed loss; the same net, real
    # batches and augmentation seeds then give a lower loss for S_in and for S_out
    task = make_task(ipc=2, pool=12)
    net = init_network(SPEC, seed=5)
    g = torch.Generator().manual_seed(1)
    x_in = torch.randn(6, 1, 8, 8, generator=g).requires_grad_(True)
    x_out = torch.randn(6, 1, 8, 8, generator=g).requires_grad_(True)
    real_in = [task.real_x[task.real_y == c] for c in range(3)]
    real_out = [task.pool_x[task.block_members(c)] for c in range(3)]
    ce = [_ce_to(c) for c in range(3)]
    aug, seeds = DSA(), [11, 12, 13]

    def losses():
        return (
            set_matching_loss(net, real_in, x_in, ce, aug, seeds),
            set_matching_loss(net, real_out, x_out, [oe_loss] * 3, aug, seeds),
        )

    before = losses()
    opts = [torch.optim.SGD([x], lr=0.05, momentum=0.5) for x in (x_in, x_out)]
    sum(before).backward()
    for opt in opts:
        opt.step()
    after = losses()
    assert after[0].item() < before[0].item() and after[1].item() < before[1].item()


def test_result_format_shapes_and_determinism():
    task = make_task(ipc=2, pool=12)
    method = GradientMatching(iterations=2, outer_loop=2, inner_loop=1, batch_real=4)
    a, b = method.run(task), method.run(task)
    assert a.x_in.shape == (6, 1, 8, 8) and a.x_out.shape == (6, 1, 8, 8)
    assert a.y_in.tolist() == [0, 0, 1, 1, 2, 2]
    assert a.method == "dsa" and a.lr == method.lr_net
    assert torch.equal(a.x_in, b.x_in) and torch.equal(a.x_out, b.x_out)
    start_in, _, start_out = initial_sets(task, torch.Generator(), "random")
    assert not torch.equal(a.x_out, start_out), "S_out must be distilled, not just sampled"


def test_no_outliers_is_plain_dsa_and_ipc_1_uses_the_published_one_step_schedule():
    task = make_task(ipc=1, pool=0)
    method = GradientMatching(iterations=2, outer_loop=0, inner_loop=0, batch_real=4)  # 0, 0: the published loops
    assert method.loops(1) == (1, 1)
    result = method.run(task)
    assert result.x_in.shape == (3, 1, 8, 8) and result.x_out.shape == (0, 1, 8, 8)
    assert result.history[-1]["loss_out"] == 0.0


def test_published_schedule_and_overrides():
    published = GradientMatching(outer_loop=0, inner_loop=0)
    assert published.loops(10) == (10, 50)
    assert published.loops(50) == (50, 10)
    assert GradientMatching(outer_loop=3, inner_loop=0).loops(10) == (3, 50)
    assert GradientMatching(outer_loop=3, inner_loop=4).loops(7) == (3, 4)
    assert GradientMatching().loops(7) == (10, 10)  # params.yaml's explicit loops
    with pytest.raises(ValueError, match=r"no published schedule for ipc=7"):
        published.loops(7)


def test_blockwise_blocks_draw_from_one_kind_and_uniform_from_all():
    task = make_task(ipc=2, pool=12)  # kinds alternate 0, 1
    assert set(task.pool_kind[task.block_members(0)].tolist()) == {0}
    assert set(task.pool_kind[task.block_members(1)].tolist()) == {1}
    assert set(task.pool_kind[task.block_members(2)].tolist()) == {0}
    task.mixing = "uniform"
    assert task.block_members(1).tolist() == list(range(12))
    task.mixing = "stripes"
    with pytest.raises(ValueError, match="outliers.mixing: unknown value 'stripes'; valid choices: blockwise, uniform"):
        task.block_members(0)


def test_blockwise_initial_outliers_come_from_their_kind():
    task = make_task(ipc=2, pool=12)
    task.pool_x = torch.arange(12, dtype=torch.float).view(12, 1, 1, 1).expand(12, 1, 8, 8).clone()
    _, _, x_out = initial_sets(task, torch.Generator().manual_seed(0), "random")
    ids = x_out[:, 0, 0, 0].long()
    assert [int(i) % 2 for i in ids] == [0, 0, 1, 1, 0, 0]
    assert len(set(ids[:2].tolist())) == 2
