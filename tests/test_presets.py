"""Presets: each one validates, names only keys params.yaml has, and `dvc exp run -S` applies exactly it."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from trustdd.experiments import presets
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
