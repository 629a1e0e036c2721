"""The whole DVC pipeline on a tiny config, in a temporary copy of the project."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import apply_overrides

from trustdd import data

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not data.DEBIAN_FASHION_MNIST.exists() and not (PROJECT / "data/raw/FashionMNIST/raw").exists(),
        reason="Fashion-MNIST is not installed (make test installs it)",
    ),
]

TINY = {
    "ipc": 2,
    "data": {"train_limit": 200, "ood_size": 30, "ood_sets": ["mnist", "textures", "uniform_noise"]},
    "network": {"width": 8, "depth": 2},
    "outliers": {"per_type": 20},
    "experts": {"num_experts": 2, "epochs": 3, "batch_size": 64},
    "distill": {
        "mtt": {"iterations": 3, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2, "batch_syn": 0, "log_every": 1},
        "dsa": {"iterations": 2, "outer_loop": 2, "inner_loop": 1, "batch_real": 8, "log_every": 1},
    },
    "evaluate": {"num_eval": 2, "epochs": 4},
}


def set_params(project: Path, **changes) -> None:
    """Edit the project's params.yaml; keys are dotted paths written with ``__``."""
    params = apply_overrides(yaml.safe_load((project / "params.yaml").read_text()), **changes)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _merge(base: dict, update: dict) -> dict:
    for k, v in update.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and k != "options" else v
    return base


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(cwd))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def outs_md5(lock_path: Path) -> dict:
    lock = yaml.safe_load(lock_path.read_text())
    return {
        f"{stage}:{o['path']}": o["md5"]
        for stage, body in lock["stages"].items()
        for o in body.get("outs", [])
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("trustdd")
    for name in ["stages", "trustdd", "dvc.yaml", ".gitignore"]:
        src = PROJECT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    params = _merge(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY)
    raw = PROJECT / "data" / "raw"
    params["data"]["root"] = str(raw)  # reuse the unpacked files, if any
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro"], root)
    return root


def test_metrics_follow_the_contract(project):
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"mean", "std"}
    assert 0 <= metrics["accuracy"]["mean"] <= 100
    for score in ["msp", "energy"]:
        block = metrics["ood"][score]
        assert set(block) == {"mean", "mnist", "textures", "uniform_noise"}
        for values in block.values():
            assert set(values) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
            assert all(0 <= v <= 100 for v in values.values())
        sets = [block[s]["auroc"] for s in ["mnist", "textures", "uniform_noise"]]
        assert block["mean"]["auroc"] == pytest.approx(sum(sets) / 3, abs=1e-3)


def test_stage_outputs_exist(project):
    import torch

    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["x_in"].shape == (20, 1, 28, 28)
    assert distilled["x_out"].shape == (20, 1, 28, 28)
    assert (project / "data/distilled/images_in.png").exists()
    assert (project / "data/outliers/preview.png").exists()
    assert len(list((project / "data/experts").glob("expert_*.pt"))) == 2


def test_rerun_does_nothing_and_status_is_clean(project):
    out = run(["dvc", "repro"], project)
    assert "Running stage" not in out
    assert "up to date" in run(["dvc", "status"], project)


def test_forced_rerun_gives_byte_identical_outputs(project):
    before = outs_md5(project / "dvc.lock")
    metrics_before = (project / "metrics/metrics.json").read_bytes()
    run(["dvc", "repro", "--force"], project)
    assert outs_md5(project / "dvc.lock") == before
    assert (project / "metrics/metrics.json").read_bytes() == metrics_before


def test_changing_an_evaluation_param_reruns_only_evaluation(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["num_eval"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], project)
    assert "Running stage 'evaluate'" in out
    for stage in ["prepare_data", "prepare_outliers", "train_experts", "distill"]:
        assert f"Running stage '{stage}'" not in out


def test_no_outliers_gives_plain_mtt(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["outliers"]["source"] = "none"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], project)
    assert "Running stage 'prepare_data'" not in out
    import torch

    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["x_out"].shape[0] == 0
    assert not (project / "data/distilled/images_out.png").exists()


def test_bad_param_fails_fast_with_a_clear_message(project):
    good = (project / "params.yaml").read_text()
    set_params(project, outliers__corruptions=["jigsaw", "fog"], outliers__source="poe")
    env = dict(os.environ, PYTHONPATH=str(project))
    proc = subprocess.run(
        [sys.executable, "stages/prepare_outliers.py"], cwd=project, env=env, capture_output=True, text=True
    )
    (project / "params.yaml").write_text(good)
    assert proc.returncode == 2
    assert "outliers.corruptions: unknown value 'fog'; valid choices: jigsaw" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dsa_trains_no_experts_and_writes_the_same_artefact(project):
    import torch

    set_params(project, method="dsa", outliers__source="poe")
    out = run(["dvc", "repro"], project)
    assert "experts: none trained; method 'dsa' does not use expert trajectories" in out
    assert not list((project / "data/experts").glob("expert_*.pt"))
    meta = json.loads((project / "data/experts/meta.json").read_text())
    assert meta["num_experts"] == 0 and "dsa" in meta["skipped"]
    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["method"] == "dsa"
    assert distilled["x_in"].shape == (20, 1, 28, 28) and distilled["x_out"].shape == (20, 1, 28, 28)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "distill.dsa" in lock["stages"]["distill"]["params"]["params.yaml"]


def test_editing_the_other_methods_options_reruns_nothing(project):
    set_params(project, distill__mtt__iterations=4)
    out = run(["dvc", "repro"], project)
    assert "Running stage" not in out


def test_switching_back_to_mtt_restores_experts_from_the_run_cache(project):
    set_params(project, method="mtt", distill__mtt__iterations=3)
    out = run(["dvc", "repro"], project)
    assert "Running stage 'train_experts'" not in out and "Stage 'train_experts' is cached" in out
    assert len(list((project / "data/experts").glob("expert_*.pt"))) == 2


def test_real_outliers_from_the_embedded_pool(project):
    import torch

    set_params(project, outliers__source="oe", outliers__oe__max_images=50)
    out = run(["dvc", "repro"], project)
    assert "Running stage 'prepare_data'" not in out and "Running stage 'prepare_outliers'" in out
    pool = torch.load(project / "data/outliers/pool.pt", weights_only=True)
    assert pool["kinds"] == ["oe"] and pool["x"].shape == (50, 1, 28, 28)
    assert torch.load(project / "data/distilled/distilled.pt", weights_only=True)["x_out"].shape[0] == 20


def test_zca_is_recorded_with_the_distilled_set(project):
    import torch

    set_params(project, data__zca=True)
    run(["dvc", "repro"], project)
    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["zca"] is not None and distilled["zca"]["eigvecs"].shape == (784, 784)
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert 0 <= metrics["accuracy"]["mean"] <= 100
