from pathlib import Path

import pytest
import yaml
from helpers import apply_overrides

from trustdd.params import ParamsError, load_params

PROJECT = Path(__file__).resolve().parents[1]


def write(tmp_path, **overrides):
    params = apply_overrides(yaml.safe_load((PROJECT / "params.yaml").read_text()), **overrides)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(params))
    return f


def test_project_params_are_valid():
    p = load_params(PROJECT / "params.yaml")
    assert p.method_config().iterations >= 0
    assert p.net_spec().num_classes == 10


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"dataset": "cifar9"}, r"dataset: unknown value 'cifar9'; valid choices: fashion_mnist"),
        ({"method": "kip"}, r"method: unknown value 'kip'; valid choices: dsa, mtt"),
        ({"outliers__source": "web"}, r"outliers.source: unknown value 'web'; valid choices: none, poe, oe"),
        ({"outliers__corruptions": ["invert", "rgb_ghost"]}, r"'rgb_ghost' needs RGB images, but dataset 'fashion_mnist' has 1"),
        ({"outliers__corruptions": ["jigsaw", "fog"]}, r"outliers.corruptions: unknown value 'fog'"),
        ({"data__ood_sets": ["svhn"]}, r"data.ood_sets: unknown value 'svhn'; valid choices: mnist"),
        ({"evaluate__scores": ["odin2"]}, r"evaluate.scores: unknown value 'odin2'; valid choices: msp, energy"),
        ({"device": "tpu"}, r"device: unknown value 'tpu'; valid choices: auto, cpu, cuda"),
        ({"distill__mtt__init": "herd"}, r"distill.mtt.init: unknown value 'herd'; valid choices: random, kmeans"),
        ({"ipc": "ten"}, r"ipc: invalid value 'ten'; expected an integer"),
        ({"ipc": 0}, r"ipc: invalid value 0; expected a value >= 1"),
        ({"data__download": "yes"}, r"data.download: invalid value 'yes'; expected true or false"),
        ({"evaluate__lr": "fast"}, r"evaluate.lr: invalid value 'fast'"),
        ({"distill__mtt__syn_stepz": 3}, r"unknown key\(s\) distill.mtt.syn_stepz; valid keys: iterations, syn_steps"),
        ({"distill__dsa__outer_lop": 3}, r"unknown key\(s\) distill.dsa.outer_lop; valid keys: iterations, outer_loop"),
        ({"distill__kip": {}}, r"distill: unknown method section\(s\) kip; valid: dsa, mtt"),
        (
            {"experts__epochs": 3, "distill__mtt__max_start_epoch": 3, "distill__mtt__expert_epochs": 2},
            r"max_start_epoch \(3\) \+ distill.mtt.expert_epochs \(2\) must be <= experts.epochs \+ 1 \(4\)",
        ),
        (
            {"method": "dsa", "ipc": 7, "distill__dsa__outer_loop": 0},
            r"distill.dsa.outer_loop/inner_loop: no published schedule for ipc=7 \(published for ipc 1, 10, 20",
        ),
        ({"method": "dsa", "distill__dsa__batch_real": 0}, r"distill.dsa.batch_real: invalid value 0; expected >= 1"),
        ({"outliers__mixing": "stripes"}, r"outliers.mixing: invalid value 'stripes'; expected one of blockwise, uniform"),
        ({"data__zca": True, "data__zca_reg": 0}, r"data.zca_reg: invalid value 0.0; expected a number > 0"),
        ({"ipc": 10, "data__train_limit": 50}, r"data.train_limit: 50 is below ipc x classes = 100"),
        ({"outliers__options": {"pixelate": {"factr": 1}}}, r"outliers.options.pixelate: .*its options: factor"),
        ({"network__norm": "layer"}, r"network.norm: invalid value 'layer'"),
    ],
)
def test_bad_values_name_key_value_and_choices(tmp_path, override, pattern):
    with pytest.raises(ParamsError, match=pattern):
        load_params(write(tmp_path, **override))


def test_unknown_top_level_key(tmp_path):
    f = write(tmp_path)
    f.write_text(f.read_text() + "ipcc: 3\n")
    with pytest.raises(ParamsError, match=r"unknown key\(s\) ipcc; valid keys: seed, dataset, ipc"):
        load_params(f)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("ipc: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    "oe, pattern",
    [
        ({"format": "parquet"}, r"outliers.oe.format: unknown value 'parquet'; valid choices: embedded, npy, folder, torchvision"),
        ({"format": "npy", "path": ""}, r"outliers.oe.path: invalid value ''; expected the path to read for outliers.oe.format 'npy'"),
        ({"format": "torchvision", "path": "data/raw"}, r"outliers.oe.name: invalid value ''; expected a torchvision.datasets class"),
        ({"format": "embedded", "max_images": 0}, r"outliers.oe.max_images: invalid value 0; expected a value >= 1"),
        ({"formt": "npy"}, r"unknown key\(s\) outliers.oe.formt; valid keys: format, path, name"),
    ],
)
def test_bad_oe_settings(tmp_path, oe, pattern):
    f = write(tmp_path, outliers__source="oe")
    params = yaml.safe_load(f.read_text())
    params["outliers"]["oe"].update(oe)
    f.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=pattern):
        load_params(f)
