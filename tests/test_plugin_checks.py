"""Every plug-in option (corruptions, scores, distillation methods) is checked at params validation by the
plug-in itself, and the message names the full params key, the value and what is valid."""

import ast
import importlib.util
import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import apply_overrides

from trustdd.distill.methods import METHODS
from trustdd.evaluation.scores import SCORES
from trustdd.options import build, make
from trustdd.outliers.corruptions import CORRUPTIONS
from trustdd.outliers.sources import PoolRequest, build_pool
from trustdd.params import ParamsError, params_from_dict

PROJECT = Path(__file__).resolve().parents[1]


def params(**overrides) -> dict:
    """The project's params.yaml (Fashion-MNIST, 1x28x28, ipc 10, method mtt, experts.epochs 6) edited."""
    return apply_overrides(yaml.safe_load((PROJECT / "params.yaml").read_text()), **overrides)


def refused(raw: dict, key: str, value: str) -> str:
    with pytest.raises(ParamsError) as err:
        params_from_dict(raw)
    message = str(err.value)
    assert re.match(rf"params: {re.escape(key)}(: | \()", message), message
    assert value in message, message
    return message


# (corruption, options, the key's last part, the value as the message shows it). Fashion-MNIST is 28x28.
BAD_CORRUPTIONS = [
    ("pixelate", {"factor": 2.0}, "factor", "2.0"),
    ("pixelate", {"factor": 0}, "factor", "0.0"),
    ("pixelate", {"factor": -0.2}, "factor", "-0.2"),
    ("pixelate", {"factor": 0.02}, "factor", "0.02"),  # int(28 x 0.02) = 0: no block left
    ("pixelate", {"factor": "big"}, "factor", "'big'"),
    ("jigsaw", {"grid": 1}, "grid", "1"),
    ("jigsaw", {"grid": 0}, "grid", "0"),
    ("jigsaw", {"grid": 29}, "grid", "29"),  # tiles of 0 px on 28x28
    ("jigsaw", {"grid": 2.5}, "grid", "2.5"),
    ("speckle", {"std": -0.5}, "std", "-0.5"),
    ("speckle", {"std": float("inf")}, "std", "inf"),
    ("uniform_speckle", {"width": -1.0}, "width", "-1.0"),
    ("rgb_ghost", {"shift": 0}, "shift", "0.0"),
    ("rgb_ghost", {"shift": 1.5}, "shift", "1.5"),
    ("rgb_ghost", {"shift": 0.99}, "shift", "0.99"),  # round(0.99 x 28) = 28: a roll by the whole side
    ("blur", {"sigma": 0}, "sigma", "0.0"),
    ("blur", {"sigma": -0.1}, "sigma", "-0.1"),
    ("patch_shuffle", {"min_grid": 1}, "min_grid", "1"),
    ("patch_shuffle", {"max_grid": 40}, "max_grid", "40"),
    ("patch_shuffle", {"min_grid": 5, "max_grid": 3}, "max_grid", "3"),
]

BAD_SCORES = [
    ("energy", {"temperature": 0}, "temperature", "0.0"),
    ("energy", {"temperature": -1}, "temperature", "-1.0"),
    ("odin", {"temperature": 0}, "temperature", "0.0"),
    ("odin", {"noise": -0.001}, "noise", "-0.001"),
    ("knn", {"k": 0}, "k", "0"),
    ("knn", {"k": -3}, "k", "-3"),
    ("knn", {"k": 101}, "k", "101"),  # ipc 10 x 10 classes = 100 images to compare with
]

# (method, options, extra overrides, key, value as shown)
BAD_METHODS = [
    ("mtt", {"iterations": -1}, {}, "iterations", "-1"),
    ("mtt", {"syn_steps": 0}, {}, "syn_steps", "0"),
    ("mtt", {"expert_epochs": 0}, {}, "expert_epochs", "0"),
    ("mtt", {"max_start_epoch": 0}, {}, "max_start_epoch", "0"),
    ("mtt", {"max_start_epoch": 6, "expert_epochs": 2}, {}, "max_start_epoch", "(6)"),  # 6 + 2 > experts.epochs + 1
    ("mtt", {"lr_img": 0}, {}, "lr_img", "0.0"),
    ("mtt", {"lr_img": -100}, {}, "lr_img", "-100.0"),
    ("mtt", {"lr_init": 0}, {}, "lr_init", "0.0"),
    ("mtt", {"lr_lr": -1e-5}, {}, "lr_lr", "-1e-05"),
    ("mtt", {"lr_label": 0}, {}, "lr_label", "0.0"),
    ("mtt", {"batch_syn": -1}, {}, "batch_syn", "-1"),
    ("mtt", {"log_every": 0}, {}, "log_every", "0"),
    ("mtt", {"trajectories": 0}, {}, "trajectories", "0"),
    ("mtt", {"chunk": -1}, {}, "chunk", "-1"),
    ("mtt", {"chunk": 8, "memory": "unrolled"}, {}, "chunk", "8"),
    ("mtt", {"chunk": 8, "memory": "constant"}, {"network__norm": "batch"}, "chunk", "8"),
    ("mtt", {"memory": "lazy"}, {}, "memory", "'lazy'"),
    ("mtt", {"labels": "soft"}, {}, "labels", "'soft'"),
    ("mtt", {"init": "herd"}, {}, "init", "'herd'"),
    ("dsa", {"iterations": -1}, {}, "iterations", "-1"),
    ("dsa", {"outer_loop": -1}, {}, "outer_loop", "-1"),
    ("dsa", {"inner_loop": -2}, {}, "inner_loop", "-2"),
    ("dsa", {"batch_real": 0}, {}, "batch_real", "0"),
    ("dsa", {"batch_train": 0}, {}, "batch_train", "0"),
    ("dsa", {"log_every": 0}, {}, "log_every", "0"),
    ("dsa", {"lr_img": 0}, {}, "lr_img", "0.0"),
    ("dsa", {"lr_net": -0.01}, {}, "lr_net", "-0.01"),
]


def ids(cases):
    return [f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in cases]


@pytest.mark.parametrize("name, options, knob, shown", BAD_CORRUPTIONS, ids=ids(BAD_CORRUPTIONS))
def test_bad_corruption_options_are_refused_at_validation(name, options, knob, shown):
    raw = params(outliers__options={name: options})
    message = refused(raw, f"outliers.options.{name}.{knob}", f"invalid value {shown}; expected")
    assert re.search(r"expected (a|an|at) ", message)


@pytest.mark.parametrize("name, options, knob, shown", BAD_SCORES, ids=ids(BAD_SCORES))
def test_bad_score_options_are_refused_at_validation(name, options, knob, shown):
    raw = params(evaluate__score_options={name: options})
    refused(raw, f"evaluate.score_options.{name}.{knob}", f"invalid value {shown}; expected")


@pytest.mark.parametrize("method, options, extra, knob, shown", BAD_METHODS, ids=ids(BAD_METHODS))
def test_bad_method_options_are_refused_at_validation(method, options, extra, knob, shown):
    raw = params(method=method, **extra)
    raw["distill"][method].update(options)
    refused(raw, f"distill.{method}.{knob}", shown)


def test_knn_k_below_1_is_refused_even_for_a_set_made_elsewhere(tmp_path):
    torch.save(torch.zeros(20, 1, 28, 28), tmp_path / "images_best.pt")
    torch.save(torch.arange(20) % 10, tmp_path / "labels_best.pt")
    refused(params(evaluate__set=str(tmp_path / "images_best.pt"), evaluate__score_options={"knn": {"k": 0}}),
            "evaluate.score_options.knn.k", "invalid value 0; expected an integer >= 1")


def test_corruption_knobs_are_checked_against_the_ind_size():
    # grid 29 and factor 0.035 fit 32x32 CIFAR-10 images but not 28x28 Fashion-MNIST ones
    for options, message in [
        ({"jigsaw": {"grid": 29}}, "outliers.options.jigsaw.grid: invalid value 29; expected at most the image side, 28"),
        ({"pixelate": {"factor": 0.035}}, "outliers.options.pixelate.factor: invalid value 0.035; expected at least 1/28"),
    ]:
        params_from_dict(params(dataset="cifar10", outliers__options=options))
        with pytest.raises(ParamsError, match=re.escape(f"params: {message}")):
            params_from_dict(params(outliers__options=options))
    # a corruption in use is checked with its default knobs too: grid 4 on 3px images
    with pytest.raises(ParamsError, match=r"outliers.options.jigsaw.grid: invalid value 4; expected at most the image side, 3 "):
        params_from_dict(params(data__image_size=3, network__depth=1))


def test_every_option_of_every_plug_in_has_a_bad_value_here():
    """So that a new knob cannot be added without a rule and a test."""
    import dataclasses

    covered = {(c[0], k) for c in BAD_CORRUPTIONS for k in c[1]}
    assert covered == {(n, f.name) for n in CORRUPTIONS for f in dataclasses.fields(CORRUPTIONS.get(n))}
    covered = {(c[0], k) for c in BAD_SCORES for k in c[1]}
    assert covered == {(n, f.name) for n in SCORES for f in dataclasses.fields(SCORES.get(n)) if f.name != "bank"}
    covered = {(c[0], k) for c in BAD_METHODS for k in c[1]}
    boolean = {"dsa"}  # true/false knobs: the params parser already refuses anything else
    fields = {(n, f.name) for n in METHODS for f in dataclasses.fields(METHODS.get(n))}
    assert covered == {(n, k) for n, k in fields if k not in boolean}


# Without validation, the stage that uses the plug-in is where these values would surface: there the
# plug-in refuses them with the same message (on the code before this check some raised a bare
# traceback deep in the stage, e.g. pixelate factor 2 and jigsaw grid 1; others ran and gave a wrong result).


@pytest.mark.parametrize("name, options, knob, shown", BAD_CORRUPTIONS, ids=ids(BAD_CORRUPTIONS))
def test_the_outlier_stage_would_fail_on_the_same_corruption_options(name, options, knob, shown):
    images = torch.zeros(4, 3, 28, 28, dtype=torch.uint8)  # RGB for rgb_ghost; the knobs' rules depend on the side
    request = PoolRequest(images, (name,), {name: options}, 4, torch.Generator())
    with pytest.raises(ValueError, match=re.escape(f"outliers.options.{name}.{knob}: invalid value {shown}")):
        build_pool("poe", request)


@pytest.mark.parametrize("name, options, knob, shown", BAD_SCORES, ids=ids(BAD_SCORES))
def test_the_evaluation_would_fail_on_the_same_score_options(name, options, knob, shown):
    with pytest.raises(ValueError, match=re.escape(f"evaluate.score_options.{name}.{knob}: invalid value {shown}")):
        make(SCORES, name, options).check(num_train=100)  # what evaluation does with a set of 100 images


@pytest.mark.parametrize("method, options, extra, knob, shown", BAD_METHODS, ids=ids(BAD_METHODS))
def test_the_distill_stage_would_fail_on_the_same_method_options(method, options, extra, knob, shown):
    config = build(METHODS.get(method), options, f"distill.{method}")  # as params.yaml is read, unchecked
    norm = extra.get("network__norm", "instance")
    task = SimpleNamespace(ipc=10, experts=SimpleNamespace(epochs=6), spec=SimpleNamespace(norm=norm))
    with pytest.raises(ValueError, match=re.escape(f"distill.{method}.{knob}")) as err:
        config.run(task)  # refused before it touches the task's data
    assert shown in str(err.value)


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", PROJECT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGES = ["prepare_data", "prepare_ood", "prepare_outliers", "train_experts", "distill", "evaluate"]
ONE_PER_FAMILY = [
    ({"outliers__options": {"pixelate": {"factor": 2.0}}}, "outliers.options.pixelate.factor: invalid value 2.0"),
    ({"outliers__options": {"jigsaw": {"grid": 1}}}, "outliers.options.jigsaw.grid: invalid value 1"),
    ({"evaluate__score_options": {"knn": {"k": 0}}}, "evaluate.score_options.knn.k: invalid value 0"),
    ({"distill__mtt__syn_steps": 0}, "distill.mtt.syn_steps: invalid value 0"),
]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("override, message", ONE_PER_FAMILY, ids=["pixelate", "jigsaw", "knn", "mtt"])
def test_every_stage_stops_with_the_message_before_any_work(tmp_path, monkeypatch, capsys, stage, override, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params(**override)))
    monkeypatch.chdir(tmp_path)
    module = _stage(stage)
    with pytest.raises(SystemExit) as exit_:
        module.run_stage(module.main)
    assert exit_.value.code == 2
    assert f"error: params: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing read or written


def test_a_mixing_corruption_needs_two_images_per_batch():
    with pytest.raises(ParamsError, match=r"outliers.per_type: invalid value 1; expected 0 or >= 2: 'mean_mix' pairs"):
        params_from_dict(params(outliers__corruptions=["jigsaw", "mean_mix"], outliers__per_type=1))
    # a last chunk of one image joins the one before it rather than failing
    request = PoolRequest(torch.zeros(9, 1, 8, 8, dtype=torch.uint8), ("geometric_mean_mix",), {}, 9, torch.Generator())
    assert build_pool("poe", request).x.shape == (9, 1, 8, 8)
    from trustdd.outliers.sources import SOURCES

    assert SOURCES.get("poe")(request, chunk=4).x.shape == (9, 1, 8, 8)  # chunks of 4, 5


@pytest.mark.parametrize("stage", ["check_params", *STAGES])
def test_help_prints_the_stages_usage_and_runs_nothing(tmp_path, monkeypatch, capsys, stage):
    script = PROJECT / "stages" / f"{stage}.py"

    def as_command(*args: str) -> int:  # python -m stages.<stage> ARGS, in this process
        monkeypatch.setattr(sys, "argv", [str(script), *args])
        monkeypatch.delitem(sys.modules, f"stages.{stage}", raising=False)
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module(f"stages.{stage}", run_name="__main__")
        return exit_.value.code

    monkeypatch.chdir(tmp_path)  # no params.yaml here: a stage that ran would fail on it
    assert as_command("--help") == 0
    doc = ast.get_docstring(ast.parse(script.read_text()))
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m stages.{stage}\n\n{doc}\n") and "reads params.yaml" in out
    assert as_command("--ipc", "3") == 2
    assert f"error: stages.{stage} takes no arguments, got '--ipc 3' (-h for its usage)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing read or written
