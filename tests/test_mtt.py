import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from trustdd.distill.base import DivergenceError, DivergenceGuard, LossLog
from trustdd.distill.methods import DistillTask, TrajectoryMatching, kmeans_medoids, trajectory_matching_loss
from trustdd.distill.mtt import Student, StudentStep, constant_memory_gradients, unrolled_gradients
from trustdd.nn.augment import DSA, NoAugment
from trustdd.nn.networks import NetSpec, flat_params, init_network, unflatten_params

SPEC = NetSpec("convnet", channels=1, image_size=8, num_classes=3, width=4, depth=1)
# The options these tests were written against: MTT's own defaults, not params.yaml's CPU default (the
# dataclass's); a test passes what it varies.
MTT = dict(iterations=200, expert_epochs=2, max_start_epoch=4, lr_img=100.0, lr_lr=1e-5, lr_init=0.01, batch_syn=0, init="random")


def mtt(**options) -> TrajectoryMatching:
    return TrajectoryMatching(**{**MTT, **options})


class FakeExperts:
    """An expert buffer holding given trajectories."""

    def __init__(self, trajectories):
        self.trajectories = trajectories
        self.num_experts = len(trajectories)
        self.epochs = trajectories[0].shape[0] - 1

    def trajectory(self, i):
        return self.trajectories[i]


def make_task(ipc=2, pool=0, experts=None):
    g = torch.Generator().manual_seed(0)
    real_x = torch.randn(3 * ipc, 1, 8, 8, generator=g)
    real_y = torch.arange(3).repeat_interleave(ipc)
    pool_x = torch.randn(pool, 1, 8, 8, generator=g)
    pool_kind = torch.arange(pool) % 2
    return DistillTask(real_x, real_y, pool_x, pool_kind, 2, 3, ipc, SPEC, 0.5, 0, torch.device("cpu"), experts)


def test_matching_loss_values():
    start, target = torch.zeros(4), torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert trajectory_matching_loss(target, start, target) == 0
    assert trajectory_matching_loss(start, start, target) == 1
    assert trajectory_matching_loss(target / 2, start, target) == pytest.approx(0.25)


def test_student_that_lands_on_the_target_has_zero_loss():
    # The expert's "next epoch" is exactly one full-batch SGD step (lr 0.05) on the InD set, which is
    # what the student does with syn_steps=1, no augmentation and ipc = every real image.
    task = make_task(ipc=2)
    net = init_network(SPEC, seed=3)
    theta0 = flat_params(net).requires_grad_(True)
    logits = functional_call(net, unflatten_params(net, theta0), (task.real_x,))
    grad = torch.autograd.grad(F.cross_entropy(logits, task.real_y), theta0)[0]
    target = (theta0 - 0.05 * grad).detach()
    task.experts = FakeExperts([torch.stack([theta0.detach(), target])])
    method = mtt(iterations=1, syn_steps=1, expert_epochs=1, max_start_epoch=1, lr_init=0.05, dsa=False)
    result = method.run(task)
    assert result.history[0]["loss"] == pytest.approx(0.0, abs=1e-8)
    # ... and a student lr off by a factor 2 lands halfway: loss (1/2)^2 relative to a unit step
    off = mtt(iterations=1, syn_steps=1, expert_epochs=1, max_start_epoch=1, lr_init=0.025, dsa=False)
    assert off.run(task).history[0]["loss"] == pytest.approx(0.25, rel=1e-4)


def _random_experts(num=2, epochs=3):
    net = init_network(SPEC, seed=0)
    p = flat_params(net)
    g = torch.Generator().manual_seed(1)
    return FakeExperts([p + 0.05 * torch.randn(epochs + 1, p.numel(), generator=g).cumsum(0) for _ in range(num)])


def test_trustdd_mtt_shapes_lr_and_determinism():
    method = mtt(iterations=3, syn_steps=2, expert_epochs=1, max_start_epoch=2, lr_img=10.0, log_every=1)
    a = method.run(make_task(ipc=2, pool=12, experts=_random_experts()))
    b = method.run(make_task(ipc=2, pool=12, experts=_random_experts()))
    assert a.x_in.shape == (6, 1, 8, 8) and a.x_out.shape == (6, 1, 8, 8)
    assert a.y_in.tolist() == [0, 0, 1, 1, 2, 2]
    assert a.lr != pytest.approx(0.01)  # the student lr is learned
    assert torch.equal(a.x_in, b.x_in) and torch.equal(a.x_out, b.x_out) and a.lr == b.lr
    init = make_task(ipc=2, pool=12).real_x
    assert not torch.allclose(a.x_in, init), "synthetic images must move"
    assert len(a.history) == 3


def test_outlier_blocks_follow_corruption_kinds():
    task = make_task(ipc=2, pool=12, experts=_random_experts())
    task.pool_x = task.pool_kind.float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()  # pixel value = kind
    result = mtt(iterations=0, max_start_epoch=1, expert_epochs=1).run(task)
    kinds = result.x_out[:, 0, 0, 0].tolist()
    assert kinds == [0, 0, 1, 1, 0, 0]  # block c (ipc images) comes from kind c mod 2


def test_plain_mtt_without_outliers():
    result = mtt(iterations=1, syn_steps=1, expert_epochs=1, max_start_epoch=1).run(
        make_task(ipc=2, pool=0, experts=_random_experts())
    )
    assert result.x_out.shape[0] == 0


def test_start_epoch_bound_is_checked():
    # snapshots 0..3: the latest target reachable is start (<= max_start_epoch - 1) + expert_epochs <= 3
    mtt(iterations=1, syn_steps=1, max_start_epoch=2, expert_epochs=2).run(
        make_task(experts=_random_experts(epochs=3))
    )
    with pytest.raises(ValueError, match=r"distill.mtt.max_start_epoch \(3\) \+ distill.mtt.expert_epochs \(2\) must be <= experts.epochs \+ 1 \(4\)"):
        mtt(max_start_epoch=3, expert_epochs=2).run(make_task(experts=_random_experts(epochs=3)))


def test_kmeans_medoids_pick_one_image_per_cluster():
    # class 0 has points around 3 well-separated centres, class 1 around 3 others
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0], [10, 0], [0, 10], [50, 50], [60, 50], [50, 60]])
    cluster = torch.arange(6).repeat_interleave(5)
    feats = centres[cluster] + 0.1 * torch.randn(30, 2, generator=g)
    labels = (cluster >= 3).long()
    pick = kmeans_medoids(feats, labels, per_class=3, seed=0)
    assert labels[pick].tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(cluster[pick].tolist()) == [0, 1, 2, 3, 4, 5]
    assert torch.equal(pick, kmeans_medoids(feats, labels, per_class=3, seed=0))


def test_kmeans_init_draws_from_real_images():
    task = make_task(ipc=2, pool=12, experts=_random_experts())
    task.real_x = torch.randn(30, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    task.real_y = torch.arange(3).repeat_interleave(10)
    result = mtt(iterations=0, max_start_epoch=1, expert_epochs=1, init="kmeans").run(task)
    assert result.y_in.tolist() == [0, 0, 1, 1, 2, 2]
    for img, label in zip(result.x_in, result.y_in):
        assert any(torch.equal(img, r) for r in task.real_x[task.real_y == label])
    with pytest.raises(ValueError, match="distill.mtt.init: unknown value 'herd'; valid choices: random, kmeans"):
        mtt(init="herd").run(task)


def _student_gradients(mode, augment, with_outliers=True, chunk=0, steps=4, dtype=torch.float32, soft=False):
    """Image, outlier, lr (and learned soft-label) gradients of one matching iteration on a tiny net."""
    g = torch.Generator().manual_seed(7)
    x_in = torch.randn(6, 1, 8, 8, generator=g).to(dtype).requires_grad_(True)
    y_in = torch.tensor([0, 0, 1, 1, 2, 2])
    x_out = torch.randn(6, 1, 8, 8, generator=g).to(dtype).requires_grad_(True) if with_outliers else None
    theta0 = flat_params(init_network(SPEC, seed=1)).to(dtype)
    target = theta0 + 0.1 * torch.randn(theta0.shape, generator=g).to(dtype)
    lr = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    label_logits = torch.randn(6, 3, generator=g).to(dtype).requires_grad_(True) if soft else None
    student = Student(SPEC.build().to(dtype), x_in, y_in, x_out, 0.5, augment, label_logits)
    draws = [
        StudentStep(torch.randperm(6, generator=g)[:4], 100 + i, torch.randperm(6, generator=g)[:3] if with_outliers else None, 200 + i)
        for i in range(steps)
    ]
    if mode == "unrolled":
        match = unrolled_gradients(student, theta0, target, lr, draws)
    else:
        match = constant_memory_gradients(student, theta0, target, lr, draws, chunk)
    grads = (match, x_in.grad, None if x_out is None else x_out.grad, lr.grad)
    return grads + (label_logits.grad,) if soft else grads


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "learned_labels"])
@pytest.mark.parametrize("chunk", [0, 2, 3])
@pytest.mark.parametrize("augment", [NoAugment(), DSA()], ids=["plain", "dsa"])
def test_constant_memory_gradients_equal_the_unrolled_graph(chunk, augment, soft):
    # in float64, to compare the two computations rather than float32 rounding; chunk 3 splits the
    # 4 InD + 3 outlier images of a step across the InD/outlier boundary
    ref = _student_gradients("unrolled", augment, dtype=torch.float64, soft=soft)
    got = _student_gradients("constant", augment, chunk=chunk, dtype=torch.float64, soft=soft)
    assert len(ref) == (5 if soft else 4)
    assert 0 < float(ref[0]) and float(got[0]) == pytest.approx(float(ref[0]), rel=1e-10)
    for a, b in zip(ref[1:], got[1:]):
        assert a.abs().sum() > 0, "a zero gradient would make the comparison empty"
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-10)


def test_constant_memory_without_outliers_equals_unrolled_in_float32():
    ref = _student_gradients("unrolled", NoAugment(), with_outliers=False)
    got = _student_gradients("constant", NoAugment(), with_outliers=False, chunk=4)
    assert got[2] is None
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[3], ref[3], rtol=1e-4, atol=1e-6)


def test_mtt_runs_are_equal_in_both_memory_modes():
    kwargs = dict(iterations=3, syn_steps=3, expert_epochs=1, max_start_epoch=2, lr_img=10.0, lr_lr=1e-3, log_every=2)
    a = mtt(**kwargs).run(make_task(ipc=2, pool=12, experts=_random_experts()))
    b = mtt(memory="constant", chunk=4, **kwargs).run(make_task(ipc=2, pool=12, experts=_random_experts()))
    torch.testing.assert_close(b.x_in, a.x_in, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.x_out, a.x_out, rtol=1e-4, atol=1e-5)
    assert b.lr == pytest.approx(a.lr, rel=1e-5)
    # the starting sets are kept with the result, untouched by the optimisation
    assert a.start.lr == 0.01 and not torch.equal(a.start.x_in, a.x_in) and a.start.x_out.shape == a.x_out.shape
    assert torch.equal(a.start.x_in, b.start.x_in)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"memory": "tesla"}, "distill.mtt.memory"), ({"chunk": 4}, "distill.mtt.chunk"), ({"syn_steps": 0}, "distill.mtt.syn_steps")],
)
def test_bad_memory_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        mtt(**kwargs).check(ipc=2, experts_epochs=8)


def test_loss_log_records_window_means():
    log = LossLog(every=3, total=7)
    records = [log.add(i, {"loss": float(i)}, lr=0.1 * i) for i in range(7)]
    assert [r is not None for r in records] == [False, False, True, False, False, True, True]
    assert log.records == [
        {"iteration": 3, "iterations": 3, "loss": 1.0, "lr": pytest.approx(0.2)},
        {"iteration": 6, "iterations": 3, "loss": 4.0, "lr": pytest.approx(0.5)},
        {"iteration": 7, "iterations": 1, "loss": 6.0, "lr": pytest.approx(0.6)},
    ]
    assert len(log.seconds) == 3 and log.seconds == sorted(log.seconds)


@pytest.mark.parametrize("labels", ["expert", "learned"])
def test_soft_labels_start_from_the_experts_and_are_kept_with_the_result(labels):
    experts = _random_experts()
    kwargs = dict(iterations=3, syn_steps=2, expert_epochs=1, max_start_epoch=2, lr_img=10.0, labels=labels, lr_label=5.0)
    result = mtt(**kwargs).run(make_task(ipc=2, pool=12, experts=experts))
    assert result.y_soft.shape == (6, 3) and result.start.y_soft.shape == (6, 3)
    torch.testing.assert_close(result.y_soft.sum(1), torch.ones(6))
    # the start is the softmax of the experts' mean final logits on the starting images
    net = SPEC.build()
    logits = sum(functional_call(net, unflatten_params(net, experts.trajectory(i)[-1]), (result.start.x_in,)) for i in range(2)) / 2
    torch.testing.assert_close(result.start.y_soft, torch.softmax(logits, 1))
    if labels == "expert":
        assert torch.equal(result.y_soft, result.start.y_soft)  # fixed (TESLA)
    else:
        assert not torch.allclose(result.y_soft, result.start.y_soft)  # learned (DATM)
    assert mtt(iterations=1, max_start_epoch=1, expert_epochs=1).run(make_task(ipc=2, experts=experts)).y_soft is None


def test_bad_label_options_name_the_key():
    with pytest.raises(ValueError, match="distill.mtt.labels"):
        mtt(labels="teacher").check(ipc=2, experts_epochs=8)
    with pytest.raises(ValueError, match="distill.mtt.lr_label"):
        mtt(labels="learned", lr_label=0).check(ipc=2, experts_epochs=8)


def test_a_diverging_distillation_stops_with_a_message_naming_the_keys():
    method = mtt(iterations=5, syn_steps=2, expert_epochs=1, max_start_epoch=2, lr_img=1e30, lr_lr=1e30)
    with pytest.raises(DivergenceError, match=r"distill.mtt: diverged at iteration \d of 5: .*lower distill.mtt.lr_img "
                       r"or distill.mtt.lr_lr, or change distill.mtt.lr_init; no output was written"):
        method.run(make_task(ipc=2, pool=12, experts=_random_experts()))


def test_the_guard_stops_a_learned_lr_at_or_below_zero_and_a_loss_that_stays_far_above_its_start():
    guard = DivergenceGuard("distill.mtt", 100)
    guard.check(0, 0.8, 0.05)
    with pytest.raises(DivergenceError, match=r"iteration 2 of 100: the learned lr fell to -27.1 \(it must stay > 0"):
        guard.check(1, 0.7, -27.1)
    with pytest.raises(DivergenceError, match="iteration 3 of 100: the learned lr fell to 0"):
        guard.check(2, 0.7, 0.0)
    with pytest.raises(DivergenceError, match="the matching loss became inf"):
        guard.check(3, float("inf"), 0.05)
    # the bound is 10 x max(1, the first loss), held for 10 iterations in a row; one big draw does not stop it
    guard = DivergenceGuard("distill.mtt", 100)
    for it, loss in enumerate([2.0] + [25.0] * 9 + [3.0] + [20.5] * 9):
        guard.check(it, loss, 0.05)
    with pytest.raises(DivergenceError, match=r"iteration 21 of 100: the matching loss stayed above 20 \(10 x its "
                       r"start, 2; 1 = a student that does not move\) for 10 iterations, reaching 8414"):
        guard.check(20, 8414.0, 0.05)


def test_a_learned_lr_driven_below_zero_stops_the_run():
    # a huge lr_lr on a student whose lr gradient is positive walks the lr through zero in one step
    method = mtt(iterations=20, syn_steps=2, expert_epochs=1, max_start_epoch=2, lr_img=1.0, lr_lr=1e6)
    with pytest.raises(DivergenceError, match=r"diverged at iteration \d+ of 20: the learned lr fell to -"):
        method.run(make_task(ipc=2, pool=12, experts=_random_experts()))


def test_an_ipc_above_the_smallest_prepared_class_is_a_params_error_before_any_work(tmp_path):
    """A user's own data can have small classes that params validation does not count (image folders are
    listed only when prepared); the distill stage refuses such an ipc before it reads anything else."""
    from pathlib import Path

    from trustdd.data.prepared import Prepared
    from trustdd.params import ParamsError, load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")  # ipc 10
    y = torch.arange(50) % 10
    y[y == 3] = 4  # class '3' is left with no image, class '4' has 10
    x = torch.zeros(50, 1, 28, 28, dtype=torch.uint8)
    prepared = Prepared("npy", tuple(str(c) for c in range(10)), (0.5,), (0.25,), x, y, x[:10], torch.arange(10))
    with pytest.raises(ParamsError, match=r"^params: ipc: invalid value 10; expected at most 0, the train images of "
                       r"class '3' \(the smallest class of data/prepared/ind.pt\)$"):
        DistillTask.from_files(p, torch.device("cpu"), prepared, root=tmp_path)  # no pool or experts there
