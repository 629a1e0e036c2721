"""Presets: each one validates, names only keys params.yaml has, and `dvc exp run -S` applies exactly it."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from trustdd.experiments import presets, smoke
from trustdd.params import load_params

PROJECT = Path(__file__).resolve().parents[1]
FOLDER = PROJECT / "presets"
REQUIRED = {
    "cifar10-ipc1",
    "cifar10-ipc10",
    "cifar10-ipc50",
    "cifar100-ipc1",
    "cifar100-ipc10",
    "cifar100-ipc50",
    "tiny-ipc1",
    "tiny-ipc10",
}
DEPTH = {32: 3, 64: 4, 128: 5}


def test_the_paper_presets_exist():
    assert REQUIRED <= set(presets.names(FOLDER))


@pytest.mark.parametrize("name", presets.names(FOLDER))
def test_dvc_set_param_applies_exactly_the_preset(name, tmp_path):
    args, params = presets.resolve(name, FOLDER, PROJECT / "params.yaml")
    # DVC's own -S machinery on a copy of params.yaml, then our loader: the values the preset states
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", args)
    applied = load_params(tmp_path / "params.yaml")
    # the raw distill mapping may hold "1e-07" (DVC writes YAML 1.2); the parsed method options are equal
    assert replace(applied, distill={}) == replace(params, distill={})
    assert applied.method_config() == params.method_config()
    preset = presets.load(name, FOLDER)
    assert applied.dataset == preset["dataset"] and applied.ipc == preset["ipc"]
    assert applied.method_config().syn_steps == preset["distill"]["mtt"]["syn_steps"]
    assert applied.method_config().lr_lr == pytest.approx(float(preset["distill"]["mtt"]["lr_lr"]))
    assert list(applied.ood.sets) == preset["ood"]["sets"] and applied.ood.size == 10000
    # the DD papers' ConvNet: width 128, depth by resolution
    spec = applied.net_spec()
    assert spec.width == 128 and spec.depth == DEPTH[spec.image_size]
    assert (applied.experts.num_experts, applied.experts.epochs, applied.experts.lr) == (100, 50, 0.01)
    assert (applied.evaluate.num_eval, applied.evaluate.epochs) == (5, 1000)


def test_overrides_are_hydra_values():
    assert presets.hydra_value([1, "a b", True]) == '[1,"a b",true]'
    assert presets.hydra_value({"x": 0.5}) == "{x:0.5}"
    cmd = presets.command("p", ["ipc=1"], ["--temp"])
    assert cmd == ["dvc", "exp", "run", "-n", "p", "-S", "ipc=1", "--temp"]
    assert presets.command("p", [], ["-n", "mine"])[:5] == ["dvc", "exp", "run", "-n", "mine"]


def test_unknown_preset_and_unknown_key_are_clear(tmp_path):
    with pytest.raises(presets.PresetError, match="preset 'cifar11' not found .*valid: cifar10-ipc1"):
        presets.load("cifar11", FOLDER)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"distill": {"mtt": {"syn_stepz": 3}}}))
    with pytest.raises(presets.PresetError, match="preset key 'distill.mtt.syn_stepz' is not in params.yaml"):
        presets.resolve("bad", tmp_path, PROJECT / "params.yaml")
    (tmp_path / "deep.yaml").write_text(yaml.safe_dump({"network": {"depth": 9}}))
    with pytest.raises(presets.PresetError, match="preset 'deep': params: network.depth: 9 pools"):
        presets.resolve("deep", tmp_path, PROJECT / "params.yaml")


# --- smoke runs (trustdd.experiments.smoke); the runs themselves: test_preset_smoke.py, test_pipeline.py


def _base() -> dict:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def test_a_smoke_plan_keeps_the_shapes_and_shrinks_the_budget():
    plan = smoke.plan("cifar10-ipc10", presets.load("cifar10-ipc10", FOLDER), _base(), {})
    full, small = plan.full, plan.smoke
    assert plan.name == "cifar10-ipc10-smoke"
    # the shapes: dataset, image size, network, ZCA, ipc, the method's shapes, the OOD sets
    assert small.net_spec() == full.net_spec() and small.net_spec().width == 128
    assert (small.dataset, small.ipc, small.data.zca, small.ood.sets) == (full.dataset, 10, True, full.ood.sets)
    mtt_small, mtt_full = small.method_config(), full.method_config()
    for key in ("syn_steps", "batch_syn", "init", "expert_epochs", "lr_img", "lr_lr", "lr_init", "memory"):
        assert getattr(mtt_small, key) == getattr(mtt_full, key), key
    # the budget: 10 images per class, two experts of expert_epochs epochs, 3 iterations, one net of 2 epochs
    assert small.data.train_limit == 10 * 10 and full.data.train_limit == 0
    assert (small.experts.num_experts, small.experts.epochs) == (2, mtt_full.expert_epochs)
    assert (mtt_small.iterations, mtt_small.max_start_epoch) == (3, 1)
    assert (small.evaluate.num_eval, small.evaluate.epochs, small.ood.size) == (1, 2, 100)
    assert Path(small.data.root).is_absolute()  # the experiment runs in a temporary copy
    assert "distill.mtt.iterations=3" in plan.overrides and "experts.num_experts=2" in plan.overrides


def test_a_users_override_wins_and_a_bad_one_is_refused_before_any_run():
    preset = presets.load("cifar100-ipc50", FOLDER)
    plan = smoke.plan("cifar100-ipc50", preset, _base(), {"distill.mtt.syn_steps": "2", "data.train_limit": "6000"})
    assert plan.smoke.method_config().syn_steps == 2 and plan.smoke.data.train_limit == 6000
    assert plan.overrides[-2:] == ["distill.mtt.syn_steps=2", "data.train_limit=6000"]
    assert not any(o.startswith("data.train_limit=5000") for o in plan.overrides)  # replaced, not repeated
    with pytest.raises(smoke.SmokeError, match="smoke run of 'cifar100-ipc50': .*data.train_limit: 10 is below ipc x classes"):
        smoke.plan("cifar100-ipc50", preset, _base(), {"data.train_limit": "10"})
    with pytest.raises(smoke.SmokeError, match="-S: expected key=value, got 'ipc'"):
        smoke.split_user_overrides(["-S", "ipc"])
    assert smoke.split_user_overrides(["-S", "ipc=2", "--queue"]) == ({"ipc": "2"}, ["--queue"])


def test_stage_times_come_from_dvcs_stage_lines():
    ticks = iter([10.0, 12.5, 20.0, 50.0])
    lines = ["Running stage 'a':\n", "> python -m stages.a\n", "Running stage 'b':\n", "noise\n",
             "Running stage 'c':\n", "Ran experiment(s)\n"]
    echoed = []
    times = smoke.stage_times(lines, clock=lambda: next(ticks), echo=echoed.append)
    assert times == {"a": 2.5, "b": 7.5, "c": 30.0} and len(echoed) == len(lines)


def test_the_extrapolation_scales_timed_steps_by_the_full_runs_work():
    plan = smoke.plan("cifar10-ipc10", presets.load("cifar10-ipc10", FOLDER), _base(), {})
    times = {"prepare_data": 4.0, "train_experts": 30.0, "distill": 20.0, "evaluate": 12.0}
    # experts: 2 x 2 epochs x 100 images, of which 360 timed in 18 s (50 ms per image); distill: 2 of its 3
    # iterations timed (2 x 30 syn_steps units) in 12 s; evaluate: 3 nets' steps after their first
    steps = {"train_experts": {"units": 360, "seconds": 18.0}, "distill": {"units": 60, "seconds": 12.0},
             "evaluate": {"units": 300, "seconds": 3.0}}
    rows = {r["stage"]: r for r in smoke.extrapolate(times, steps, plan.smoke, plan.full, n_train=50000)}
    assert rows["prepare_data"]["full_s"] == 4.0  # reads the same files either way
    # 100 experts x 50 epochs x 50,000 images at 50 ms, plus the 12 s outside the timed steps
    assert rows["train_experts"]["full_s"] == pytest.approx(12.0 + 0.05 * 100 * 50 * 50000)
    assert rows["distill"]["full_s"] == pytest.approx(8.0 + 0.2 * 5000 * 30)  # 5000 iterations x 30 syn_steps
    # 5 nets x 3 sets x 1000 epochs x 100 InD images at 10 ms, plus 9 s of scoring etc. x 5 nets
    assert rows["evaluate"]["full_s"] == pytest.approx(9.0 * 5 + 0.01 * 5 * 3 * 1000 * 100)
    unknown = smoke.extrapolate(times, steps, plan.smoke, plan.full, n_train=None)
    assert [r["full_s"] is None for r in unknown] == [False, True, False, True]
    assert "total" in smoke.report(plan, unknown, "cpu") and ">= " in smoke.report(plan, unknown, "cpu")


def test_a_smoke_runs_capped_pool_still_holds_the_sets_outliers():
    preset = {**presets.load("imagenette-ipc10", FOLDER), "ipc": 50}  # 500 outliers from a capped POE pool
    plan = smoke.plan("imagenette-ipc50", preset, _base(), {})
    assert plan.full.outliers.per_type == 5000 and plan.smoke.outliers.per_type == 500 == plan.smoke.data.train_limit
