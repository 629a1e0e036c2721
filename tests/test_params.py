import dataclasses
import typing
from pathlib import Path

import pytest
import torch
import yaml
from helpers import apply_overrides

from trustdd.data.datasets import DataNotFoundError
from trustdd.distill.methods import METHODS
from trustdd.options import build, option_names
from trustdd.params import Params, ParamsError, load_params

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


def _option_keys(cls: type, data: dict, key: str = "") -> list[str]:
    """Where ``data`` (a section of params.yaml) and the options of ``cls`` differ: keys missing from
    params.yaml (hidden options) and keys no option has (stale ones), in its sections too."""
    names, hints = option_names(cls), typing.get_type_hints(cls)
    problems = [f"hidden: {key}{k}" for k in names if k not in data] + [f"stale: {key}{k}" for k in data if k not in names]
    for k in names:
        if dataclasses.is_dataclass(hints[k]) and k in data:
            problems += _option_keys(hints[k], data[k], f"{key}{k}.")
    return problems


def test_params_yaml_lists_every_option_at_its_default():
    """No hidden option and no stale key: params.yaml's keys are the fields of the params dataclasses and
    of every method's, and its values are their defaults (what a key left out means)."""
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    problems = _option_keys(Params, raw)
    assert sorted(raw["distill"]) == sorted(METHODS.names())
    for name in METHODS.names():
        problems += _option_keys(METHODS.get(name), raw["distill"][name], f"distill.{name}.")
    assert not problems
    assert build(Params, raw) == Params()
    for name in METHODS.names():
        assert build(METHODS.get(name), raw["distill"][name]) == METHODS.get(name)(), name


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"dataset": "cifar9"}, r"dataset: unknown value 'cifar9'; valid choices: mnist, fashion_mnist, svhn, cifar10"),
        ({"method": "kip"}, r"method: unknown value 'kip'; valid choices: dsa, mtt"),
        ({"outliers__source": "web"}, r"outliers.source: unknown value 'web'; valid choices: none, poe, oe"),
        ({"outliers__corruptions": ["invert", "rgb_ghost"]}, r"'rgb_ghost' needs RGB images, but dataset 'fashion_mnist' has 1"),
        ({"outliers__corruptions": ["jigsaw", "fog"]}, r"outliers.corruptions: unknown value 'fog'"),
        ({"ood__sets": ["lsun"]}, r"ood.sets: unknown value 'lsun'; valid choices: mnist, textures, .*lsun_crop"),
        ({"ood__optional": ["dtd"]}, r"ood.optional: invalid value 'dtd'; expected one of the sets in ood.sets"),
        ({"dataset": "cifar10", "ood__sets": ["cifar10", "dtd"]}, r"ood.sets: invalid value 'cifar10'; expected sets other than 'cifar10', which is drawn from the InD dataset"),
        ({"data__image_size": -1}, r"data.image_size: invalid value -1; expected a value >= 0"),
        ({"network__depth": 6}, r"network.depth: 6 pools a 28px image to nothing.*dataset 'fashion_mnist' at 28px"),
        ({"ood__sets": [], "ood__user": []}, r"ood.sets: invalid value \[\]; expected at least one OOD set"),
        ({"ood__user": [{"path": "x"}]}, r"ood.user\[0\].name: invalid value ''; expected a non-empty name"),
        ({"ood__user": [{"name": "near", "path": "x"}]}, r"ood.user\[0\].name: invalid value 'near'; expected a name other than all, near, far"),
        ({"ood__user": [{"name": "a", "path": "x", "format": "zip"}]}, r"ood.user\[0\].format: invalid value 'zip'; expected one of folder, npy"),
        ({"ood__user": [{"name": "a"}]}, r"ood.user\[0\].path: invalid value ''; expected the folder of images or the .npy file"),
        ({"ood__user": [{"name": "a", "path": "x", "group": "middle"}]}, r"ood.user\[0\].group: invalid value 'middle'; expected one of near, far, or empty"),
        ({"ood__user": [{"name": "mnist", "path": "x"}]}, r"ood: set name\(s\) mnist used twice"),
        ({"ood__user": [{"name": "a", "path": "x", "colour": 1}]}, r"unknown key\(s\) ood.user\[0\].colour; valid keys: name, format, path, group, optional"),
        ({"ood__groups": {"svhn": "near"}}, r"ood.groups.svhn: invalid value 'near'; expected a group for one of the chosen sets: mnist"),
        ({"ood__groups": {"mnist": "close"}}, r"ood.groups.mnist: invalid value 'close'; expected one of near, far"),
        ({"evaluate__scores": ["odin2"]}, r"evaluate.scores: unknown value 'odin2'; valid choices: msp, max_logit, energy, odin, knn"),
        ({"evaluate__scores": []}, r"evaluate.scores: invalid value \[\]; expected at least one of msp"),
        ({"evaluate__score_options": {"gram": {}}}, r"evaluate.score_options: unknown score 'gram'; valid: msp"),
        ({"evaluate__score_options": {"odin": {"temp": 1}}}, r"unknown key\(s\) evaluate.score_options.odin.temp; valid keys: temperature, noise"),
        ({"evaluate__score_options": {"knn": {"k": 101}}}, r"evaluate.score_options.knn.k: invalid value 101; expected an integer from 1 to 100"),
        ({"evaluate__architectures": ["resnet1000"]}, r"evaluate.architectures: invalid value 'resnet1000'; expected one of convnet, resnet18"),
        ({"evaluate__architectures": []}, r"evaluate.architectures: invalid value \[\]; expected at least one of convnet"),
        ({"evaluate__full_data_epochs": -1}, r"evaluate.full_data_epochs: invalid value -1; expected a value >= 0"),
        ({"evaluate__baseline_lr": 0}, r"evaluate.baseline_lr: invalid value 0.0; expected a number > 0"),
        ({"evaluate__set": ""}, r"evaluate.set: invalid value ''; expected the distilled set to evaluate"),
        ({"device": "tpu"}, r"device: unknown value 'tpu'; valid choices: auto, cpu, cuda"),
        ({"parallel__nproc": 0}, r"parallel.nproc: invalid value 0; expected an integer >= 1 \(1: one process\)"),
        ({"parallel__backend": "mpi"}, r"parallel.backend: unknown value 'mpi'; valid choices: auto, gloo, nccl"),
        ({"parallel__backend": "nccl", "device": "cpu"}, r"parallel.backend: 'nccl' needs CUDA devices, but device is 'cpu'"),
        ({"parallel__ranks": 2}, r"unknown key\(s\) parallel.ranks; valid keys: nproc, backend, timeout_minutes"),
        ({"parallel__timeout_minutes": 0}, r"parallel.timeout_minutes: invalid value 0; expected an integer >= 1"),
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
        ({"outliers__mixing": "stripes"}, r"outliers.mixing: unknown value 'stripes'; valid choices: blockwise, uniform"),
        ({"data__zca": True, "data__zca_reg": 0}, r"data.zca_reg: invalid value 0.0; expected a number > 0"),
        ({"ipc": 10, "data__train_limit": 50}, r"data.train_limit: 50 is below ipc x classes = 100"),
        (
            {"ipc": 50, "outliers__per_type": 40},  # blockwise: each class block draws ipc from its kind
            r"outliers.per_type: 40 is too few: the set has ipc x classes = 500 outliers from 4 corruption\(s\), so "
            r"each needs at least 125 images \(or 0",
        ),
        ({"ipc": 10, "outliers__per_type": 24}, r"outliers.per_type: 24 is too few: .* at least 25 images"),
        ({"outliers__options": {"pixelate": {"factr": 1}}}, r"unknown key\(s\) outliers.options.pixelate.factr; valid keys: factor"),
        ({"network__norm": "layer"}, r"network.norm: unknown value 'layer'; valid choices: instance, batch, none"),
    ],
)
def test_bad_values_name_key_value_and_choices(tmp_path, override, pattern):
    with pytest.raises(ParamsError, match=pattern):
        load_params(write(tmp_path, **override))


def _external_set(folder: Path, n: int = 30) -> Path:
    folder.mkdir()
    torch.save(torch.zeros(n, 1, 28, 28), folder / "images_best.pt")
    torch.save(torch.arange(n) % 10, folder / "labels_best.pt")
    return folder / "images_best.pt"


def test_knn_k_is_checked_against_the_size_of_a_set_made_elsewhere(tmp_path):
    images = _external_set(tmp_path / "elsewhere", n=600)
    p = load_params(write(tmp_path, evaluate__set=str(images), evaluate__score_options={"knn": {"k": 500}}))
    assert p.evaluate.score_options == {"knn": {"k": 500}}  # 500 < 600 images, though above ipc x classes = 100
    small = _external_set(tmp_path / "small", n=30)
    with pytest.raises(ParamsError, match=r"knn"):
        load_params(write(tmp_path, evaluate__set=str(small), evaluate__score_options={"knn": {"k": 500}}))


def test_evaluate_set_is_read_when_params_are_validated(tmp_path):
    with pytest.raises(ParamsError, match=r"params: evaluate.set: '.*nowhere.pt' does not exist"):
        load_params(write(tmp_path, evaluate__set=str(tmp_path / "nowhere.pt")))
    empty = tmp_path / "no_images"
    empty.mkdir()
    with pytest.raises(ParamsError, match=r"params: evaluate.set: no images_best.pt or images.pt in .*no_images"):
        load_params(write(tmp_path, evaluate__set=str(empty)))
    cut = tmp_path / "cut.pt"
    torch.save({"x_in": torch.zeros(100, 1, 28, 28), "y_in": torch.zeros(100, dtype=torch.long)}, cut)
    cut.write_bytes(cut.read_bytes()[:20000])
    with pytest.raises(ParamsError, match=r"params: evaluate.set: .*cut.pt cannot be read \(.*\); it is damaged or truncated"):
        load_params(write(tmp_path, evaluate__set=str(cut)))
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    torch.save(torch.zeros(4, 3, 32, 32), rgb / "images.pt")
    torch.save(torch.zeros(4, dtype=torch.long), rgb / "labels.pt")
    with pytest.raises(ParamsError, match=r"evaluate.set: images in .* have shape \(4, 3, 32, 32\); expected N x 1 x 28 x 28"):
        load_params(write(tmp_path, evaluate__set=str(rgb)))


def test_user_ood_sets_parse_into_typed_entries(tmp_path):
    user = [{"name": "kmnist", "path": "/data/kmnist", "group": "near"}, {"name": "arr", "format": "npy", "path": "a.npy", "optional": True}]
    p = load_params(write(tmp_path, ood__user=user))
    assert [(u.name, u.format, u.group, u.optional) for u in p.ood.user] == [("kmnist", "folder", "near", False), ("arr", "npy", "", True)]


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


def test_image_size_and_data_root_env(tmp_path, monkeypatch):
    p = load_params(write(tmp_path, dataset="imagenette", data__image_size=64, network__depth=4,
                          outliers__corruptions=["jigsaw"], ood__sets=["textures"]))
    assert p.ind_shape() == (3, 64, 64) and p.net_spec().image_size == 64
    assert load_params(write(tmp_path, dataset="tiny_imagenet", ood__sets=["dtd"])).ind_shape() == (3, 64, 64)
    monkeypatch.delenv("TRUSTDD_DATA_ROOT", raising=False)
    assert p.data_files().root == Path("data/raw") and p.data_files().download is False
    monkeypatch.setenv("TRUSTDD_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert p.data_files().root == tmp_path / "elsewhere"


def test_a_yaml12_exponent_float_as_dvc_writes_it_is_a_number(tmp_path):
    f = write(tmp_path)
    f.write_text(f.read_text() + "\n")
    raw = yaml.safe_load(f.read_text())
    raw["distill"]["mtt"]["lr_lr"] = "1e-07"  # what PyYAML makes of DVC's `lr_lr: 1e-07`
    f.write_text(yaml.safe_dump(raw))
    assert load_params(f).method_config().lr_lr == 1e-07
    raw["distill"]["mtt"]["lr_lr"] = "fast"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="distill.mtt.lr_lr: invalid value 'fast'; expected a number"):
        load_params(f)


def _npy_root(root, classes=4, side=12, channels=1):
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    y = np.arange(classes * 3) % classes
    np.save(root / "x_train.npy", np.zeros((y.size, side, side, channels), np.uint8))
    np.save(root / "y_train.npy", y)
    np.save(root / "x_test.npy", np.zeros((classes, side, side, channels), np.uint8))
    np.save(root / "y_test.npy", np.arange(classes))
    return root


def test_own_npy_data_sets_shape_classes_and_checks_at_validation(tmp_path, monkeypatch):
    monkeypatch.delenv("TRUSTDD_DATA_ROOT", raising=False)
    root = _npy_root(tmp_path / "arr")
    common = dict(dataset="npy", data__root=str(root), data__train_limit=0, network__depth=2, ipc=2)
    p = load_params(write(tmp_path, **common))
    assert p.ind_shape() == (1, 12, 12) and p.dataset_info.num_classes == 4
    spec = p.net_spec()
    assert (spec.channels, spec.image_size, spec.num_classes) == (1, 12, 4)
    assert load_params(write(tmp_path, **{**common, "data__image_size": 16})).ind_shape() == (1, 16, 16)
    with pytest.raises(ParamsError, match=r"data.train_limit: 7 is below ipc x classes = 8"):
        load_params(write(tmp_path, **{**common, "data__train_limit": 7}))
    with pytest.raises(ParamsError, match=r"'rgb_ghost' needs RGB images, but dataset 'npy' has 1 channel"):
        load_params(write(tmp_path, **{**common, "outliers__corruptions": ["rgb_ghost"]}))
    with pytest.raises(ParamsError, match=r"network.depth: 4 pools a 12px image to nothing"):
        load_params(write(tmp_path, **{**common, "network__depth": 4}))
    bad = root / "y_test.npy"
    bad.write_bytes(b"not an array")  # a bad file fails when params are loaded, before any stage works
    with pytest.raises(DataNotFoundError, match=rf"dataset 'npy': data.root: '{bad}' is not a valid .npy file"):
        load_params(write(tmp_path, **common))
    monkeypatch.setenv("TRUSTDD_DATA_ROOT", str(_npy_root(tmp_path / "env", classes=3, channels=3)))
    assert load_params(write(tmp_path, **common)).ind_shape() == (3, 12, 12)


def test_own_image_folder_needs_an_image_size_and_its_folders(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("TRUSTDD_DATA_ROOT", raising=False)
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (9, 7)).save(root / split / name / "a.png")
    common = dict(dataset="imagefolder", data__root=str(root), data__train_limit=0)
    with pytest.raises(ParamsError, match=r"^params: data.image_size: invalid value 0; expected the side \(> 0\)"):
        load_params(write(tmp_path, **common))
    with pytest.raises(ParamsError, match=r"^params: data.image_size: invalid value 0"):  # whatever the files
        load_params(write(tmp_path, **{**common, "data__root": str(tmp_path / "nowhere")}))
    p = load_params(write(tmp_path, **common, data__image_size=32))
    assert p.ind_shape() == (3, 32, 32) and p.net_spec().num_classes == 2
    with pytest.raises(DataNotFoundError, match=r"files not found under data.root '.*nowhere'"):
        load_params(write(tmp_path, **{**common, "data__root": str(tmp_path / "nowhere")}, data__image_size=32))


def test_data_verify_is_parsed_and_reaches_the_data_files(tmp_path):
    assert load_params(PROJECT / "params.yaml").data.verify is True
    p = load_params(write(tmp_path, data__verify=False))
    assert p.data.verify is False and p.data_files().verify is False
    with pytest.raises(ParamsError, match=r"data.verify: invalid value 'no'; expected true or false"):
        load_params(write(tmp_path, data__verify="no"))


def test_the_pipelines_own_set_written_another_way_is_not_read_at_validation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh checkout: data/distilled/distilled.pt is not made yet
    for spelling in ("./data/distilled/distilled.pt", "data//distilled/distilled.pt"):
        assert load_params(write(tmp_path, evaluate__set=spelling)).evaluate.set == spelling


def test_a_set_in_torchs_legacy_format_is_read_at_validation(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(torch.zeros(20, 1, 28, 28), folder / "images.pt", _use_new_zipfile_serialization=False)
    torch.save(torch.arange(20) % 10, folder / "labels.pt", _use_new_zipfile_serialization=False)
    assert load_params(write(tmp_path, evaluate__set=str(folder))).evaluate.set == str(folder)


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text() + "ipc: 5\n")  # appended: PyYAML alone would keep 5 silently
    with pytest.raises(ParamsError, match=r"params.yaml line \d+: found duplicate key 'ipc' \(first on line \d+\); keep one"):
        load_params(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("data:\n  zca: true\n  zca: false\n")
    with pytest.raises(ParamsError, match=r"nested.yaml line 3: found duplicate key 'zca' \(first on line 2\); keep"):
        load_params(nested)
