"""The whole DVC pipeline on a tiny config, in a temporary copy of the project.

The pipeline is reproduced once per module (``built``); every test that changes something works on its
own copy of it (``project``), so the tests do not depend on each other's order or outcome."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import apply_overrides

from trustdd.data import datasets
from trustdd.outliers.pool import OutlierPool

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not datasets.DEBIAN_FASHION_MNIST.exists() and not (PROJECT / "data/raw/FashionMNIST/raw").exists(),
        reason="Fashion-MNIST is not installed (make test installs it)",
    ),
]

TINY = {
    "ipc": 2,
    "workers": 0,  # in-process: two worker processes would each import torch again (seconds) for tiny jobs
    "data": {"train_limit": 200},
    "ood": {"size": 30, "sets": ["mnist", "textures", "uniform_noise"]},
    "network": {"width": 8, "depth": 2},
    "outliers": {"per_type": 20},
    "experts": {"num_experts": 2, "epochs": 3, "batch_size": 64},
    "distill": {
        "mtt": {"iterations": 3, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2, "batch_syn": 0, "log_every": 1},
        "dsa": {"iterations": 2, "outer_loop": 2, "inner_loop": 1, "batch_real": 8, "log_every": 1},
    },
    "evaluate": {"num_eval": 2, "epochs": 4, "scores": ["msp", "energy", "knn"]},  # odin: unit-tested, slow here
}


def set_params(project: Path, **changes) -> None:
    """Edit the project's params.yaml; keys are dotted paths written with ``__``."""
    params = apply_overrides(yaml.safe_load((project / "params.yaml").read_text()), **changes)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _merge(base: dict, update: dict) -> dict:
    for k, v in update.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and k != "options" else v
    return base


def run(cmd: list[str], cwd: Path, fails: bool = False, **env_vars: str) -> str:
    """Run a command that must succeed (or, with ``fails``, must fail); returns its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(cwd), **env_vars)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    outcome = "succeeded" if fails else "failed"
    assert (proc.returncode != 0) == fails, f"{' '.join(cmd)} {outcome}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def stages_run(out: str) -> list[str]:
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]


def outs_md5(lock_path: Path) -> dict:
    lock = yaml.safe_load(lock_path.read_text())
    return {
        f"{stage}:{o['path']}": o["md5"]
        for stage, body in lock["stages"].items()
        for o in body.get("outs", [])
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
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
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["dvc", "repro"], root)
    return root


@pytest.fixture
def project(built, tmp_path):
    """A fresh copy of the reproduced project (git repository, DVC cache and outputs), for one test."""
    copy = tmp_path / "trustdd"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def test_metrics_follow_the_contract(built):
    metrics = json.loads((built / "metrics/metrics.json").read_text())
    assert set(metrics) == {"distilled", "init", "random", "distilled_minus_init", "distilled_minus_random"}
    row = metrics["distilled"]["convnet"]
    assert set(row) == {"accuracy", "msp", "energy", "knn"}  # the headline; ECE and AUPRs are in ood.json
    assert set(row["accuracy"]) == {"mean", "std"} and 0 <= row["accuracy"]["mean"] <= 100
    for score in ["msp", "energy", "knn"]:
        assert set(row[score]) == {"auroc", "fpr95_in", "fpr95_out"}
        assert all(0 <= v["mean"] <= 100 for v in row[score].values())
    for base in ("init", "random"):
        gain = metrics[f"distilled_minus_{base}"]["convnet"]
        other = metrics[base]["convnet"]["accuracy"]["mean"]
        assert gain["accuracy"]["mean"] == pytest.approx(row["accuracy"]["mean"] - other, abs=1e-3)
        assert gain["accuracy"]["std"] >= 0 and set(gain["msp"]) == {"auroc", "fpr95_in", "fpr95_out"}
    detail = json.loads((built / "metrics/ood.json").read_text())
    assert detail["groups"] == {"mnist": "near", "textures": "far", "uniform_noise": "far"}
    block = detail["results"]["distilled"]["convnet"]["ood"]["msp"]
    assert set(block) == {"all", "near", "far", "mnist", "textures", "uniform_noise"}
    sets = [block[s]["auroc"]["mean"] for s in ["mnist", "textures", "uniform_noise"]]
    assert block["all"]["auroc"]["mean"] == pytest.approx(sum(sets) / 3, abs=1e-3)
    assert block["far"]["auroc"]["mean"] == pytest.approx(sum(sets[1:]) / 2, abs=1e-3)
    assert block["all"]["auroc"] == row["msp"]["auroc"]
    report = (built / "metrics/report.md").read_text()
    assert "| distilled | convnet | 20 | 4 |" in report and "| random | convnet | 20 | 4 |" in report
    assert "| init | convnet | 20 | 4 |" in report and "## Distilled minus init" in report


def test_distill_curve_holds_window_means_and_the_wall_time_stays_out_of_it(built):
    import torch

    curve = json.loads((built / "metrics/distill_curve.json").read_text())["distill"]
    assert [r["iteration"] for r in curve] == [1, 2, 3] and all(r["iterations"] == 1 for r in curve)
    assert all(set(r) == {"iteration", "iterations", "loss", "lr"} for r in curve)
    times = json.loads((built / "metrics/timing/distill.json").read_text())["distill"]
    assert [t["iteration"] for t in times] == [1, 2, 3] and times[-1]["seconds"] >= times[0]["seconds"] >= 0
    # the distilled set carries its starting point, which evaluation trained as `init`
    d = torch.load(built / "data/distilled/distilled.pt", weights_only=True)
    assert d["init"]["x_in"].shape == d["x_in"].shape and not torch.equal(d["init"]["x_in"], d["x_in"])
    assert d["init"]["lr"] == 0.05


def test_stage_outputs_exist(built):
    import torch

    distilled = torch.load(built / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["x_in"].shape == (20, 1, 28, 28)
    assert distilled["x_out"].shape == (20, 1, 28, 28)
    assert (built / "data/distilled/images_in.png").exists()
    assert (built / "data/outliers/preview.png").exists()
    ood = torch.load(built / "data/ood/ood.pt", weights_only=True)
    assert {k: v.shape for k, v in ood["images"].items()} == {k: (30, 1, 28, 28) for k in ["mnist", "textures", "uniform_noise"]}
    assert (built / "data/ood/preview.png").exists()
    assert len(list((built / "data/experts").glob("expert_*.pt"))) == 2


def test_the_distilled_set_reads_back_through_the_public_api_with_its_classes_and_net(built):
    from PIL import Image

    from trustdd import api
    from trustdd.data.prepared import Prepared
    from trustdd.nn.networks import NetSpec

    s = api.load(built / "data/distilled/distilled.pt")
    assert s.classes == Prepared.load(built / "data/prepared/ind.pt").classes and s.classes[0] == "T-shirt/top"
    assert s.net == NetSpec("convnet", channels=1, image_size=28, num_classes=10, width=8, depth=2, norm="instance")
    assert s.images.shape == s.outliers.shape == (20, 1, 28, 28) and 0 <= float(s.images.min()) <= float(s.images.max()) <= 1
    # the grids carry a label margin left of their 10 rows (classes, outlier kinds) and 3 rows (OOD sets)
    for name, rows, per_row in [("distilled/images_in", 10, 2), ("distilled/images_out", 10, 2),
                                ("ood/preview", 3, 8), ("outliers/preview", 4, 16)]:
        width, height = Image.open(built / f"data/{name}.png").size
        assert height == 1 + rows * 29 and width > 1 + per_row * 29, name


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


def test_another_kernel_path_passes_the_statistical_check_and_a_ruined_distilled_set_fails_it(project):
    """`make repro-check` on another platform: a second CPU kernel path (ATen's unvectorised kernels) rounds
    differently from the first training step on, so the bytes part, and the statistical check passes; it
    fails once the distilled images are ruined (replaced by noise) and evaluation is rerun. Four nets of 15
    epochs per set: with the tiny default's 2 nets of 4 epochs the tolerances are wider than the metrics'
    range."""
    import torch

    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("ATen already runs its unvectorised kernels here: no second kernel path to compare with")
    set_params(project, evaluate__num_eval=4, evaluate__epochs=15)
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny results"], project)
    before = outs_md5(project / "dvc.lock")
    # the stages that train, where the paths part (the prepare stages are left as they were: seconds saved)
    run(["dvc", "repro", "--force", "--downstream", "train_experts"], project, ATEN_CPU_CAPABILITY="default")
    after = outs_md5(project / "dvc.lock")
    assert after["train_experts:data/experts"] != before["train_experts:data/experts"]  # the bytes part
    check = [sys.executable, "-m", "trustdd.experiments.repro", "check"]
    out = run(check, project)
    assert "platform differs in cpu_capability" in out and "'DEFAULT' (this run)" in out
    assert "the check is statistical" in out and "repro-check: passed" in out
    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    distilled["x_in"] = torch.randn(distilled["x_in"].shape, generator=torch.Generator().manual_seed(0))
    torch.save(distilled, project / "data/distilled/distilled.pt")  # a distillation that ruined its images
    run(["dvc", "repro", "-s", "evaluate"], project, ATEN_CPU_CAPABILITY="default")  # on the second path again
    out = run(check, project, fails=True)
    accuracy = next(line for line in out.splitlines() if line.strip().startswith("distilled/convnet/accuracy "))
    assert accuracy.endswith("BEYOND") and "repro-check: FAILED" in out and "dvc.lock" not in out.split("FAILED")[1]


def test_changing_an_evaluation_param_reruns_only_evaluation(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["num_eval"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], project)
    assert "Running stage 'evaluate'" in out
    for stage in ["prepare_data", "prepare_ood", "prepare_outliers", "train_experts", "distill"]:
        assert f"Running stage '{stage}'" not in out


def test_plots_page_renders_offline(project):
    from trustdd.experiments.plots import check_page

    run([sys.executable, "-m", "trustdd.experiments.plots", "show"], project)
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed: the page was written but not opened")
    result = check_page(project / "dvc_plots/index.html")
    # ROC, score histograms, evaluation training curves, distillation loss; 4 image grids
    assert (result.charts_expected, result.charts_drawn) == (4, 4), result.problems
    assert result.images_loaded == result.images_expected == 4, result.problems


def test_a_user_ood_set_reruns_only_the_ood_and_evaluate_stages(project):
    from PIL import Image

    folder = project / "my_ood"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"nope")
    set_params(project, ood__user=[{"name": "mine", "path": str(folder), "group": "near"}])
    out = run(["dvc", "repro"], project)
    assert "Running stage 'prepare_ood'" in out and "Running stage 'evaluate'" in out
    for stage in ["prepare_data", "prepare_outliers", "train_experts", "distill"]:
        assert f"Running stage '{stage}'" not in out
    assert "skipped 1 of 7 image files" in out
    sets = json.loads((project / "data/ood/sets.json").read_text())
    assert sets["mine"]["images"] == 6 and sets["mine"]["skipped"][0]["file"].endswith("broken.jpg")
    detail = json.loads((project / "metrics/ood.json").read_text())
    assert detail["groups"]["mine"] == "near"
    assert "mine" in detail["results"]["distilled"]["convnet"]["ood"]["msp"]


def test_evaluate_scores_a_set_made_elsewhere(project):
    import torch

    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    elsewhere = project / "mtt_run"
    elsewhere.mkdir()
    torch.save(distilled["x_in"], elsewhere / "images_best.pt")
    torch.save(distilled["y_in"], elsewhere / "labels_best.pt")
    set_params(project, evaluate__set=str(elsewhere), evaluate__lr=0.01)
    out = run(["dvc", "repro"], project)
    assert "Running stage 'evaluate'" in out and "Running stage 'distill'" not in out
    detail = json.loads((project / "metrics/ood.json").read_text())
    assert detail["about"]["method"] == "external" and detail["nets"]["distilled"]["convnet"]["lr"] == 0.01


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
    set_params(project, outliers__corruptions=["jigsaw", "fog"], outliers__source="poe")
    env = dict(os.environ, PYTHONPATH=str(project))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.prepare_outliers"], cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "outliers.corruptions: unknown value 'fog'; valid choices: jigsaw" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_diverging_distillation_stops_the_stage_and_leaves_the_last_set(project):
    before = {f.name: f.read_bytes() for f in (project / "data/distilled").iterdir()}
    set_params(project, distill__mtt__iterations=20, distill__mtt__lr_lr=1.0e6)  # the learned lr runs away (then NaN)
    env = dict(os.environ, PYTHONPATH=str(project))
    proc = subprocess.run([sys.executable, "-m", "stages.distill"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"error: distill.mtt: diverged at iteration \d+ of 20: the learned lr fell to (nan|-\S+) \(it must stay > 0",
                     proc.stderr), proc.stderr
    assert "lower distill.mtt.lr_img or distill.mtt.lr_lr, or change distill.mtt.lr_init; no output was written" in proc.stderr
    assert {f.name: f.read_bytes() for f in (project / "data/distilled").iterdir()} == before


def test_a_misspelt_key_or_a_bad_option_stops_the_run_before_any_stage_works(project):
    good = (project / "params.yaml").read_text()
    try:
        set_params(project, outliers__per_type=21)  # makes prepare_outliers and everything after it out of date
        (project / "params.yaml").write_text((project / "params.yaml").read_text() + "lamda_oe: 0.1\n")
        out = run(["dvc", "repro"], project, fails=True)
        assert stages_run(out) == ["check_params"]
        assert "params: unknown key(s) lamda_oe; valid keys: seed, dataset" in out and "Traceback" not in out
        (project / "params.yaml").write_text(good)
        set_params(project, outliers__per_type=21, distill__dsa__iteration=3)  # method is mtt: dsa's section is not tracked
        out = run(["dvc", "repro"], project, fails=True)
        assert stages_run(out) == ["check_params"] and "unknown key(s) distill.dsa.iteration" in out
        (project / "params.yaml").write_text(good)
        set_params(project, outliers__per_type=21, outliers__options={"pixelate": {"factor": 2.0}})
        out = run(["dvc", "repro"], project, fails=True)
        assert stages_run(out) == ["check_params"] and "params: outliers.options.pixelate.factor: invalid value 2.0" in out
    finally:
        (project / "params.yaml").write_text(good)
    assert "up to date" in run(["dvc", "status"], project)  # the failed checks left every stage in sync


def test_a_missing_evaluate_set_stops_the_run_before_the_upstream_stages(project):
    set_params(project, outliers__per_type=21, evaluate__set="runs/elsewhere/images_best.pt")
    out = run(["dvc", "repro"], project, fails=True)
    assert stages_run(out) == ["check_params"]
    assert "params: evaluate.set: 'runs/elsewhere/images_best.pt' does not exist" in out


def test_a_failed_evaluation_keeps_the_last_complete_results(project):
    metrics = sorted(p for p in (project / "metrics").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in metrics}
    ood = project / "data/ood/ood.pt"
    ood.write_bytes(ood.read_bytes()[:5000])  # a damaged input: evaluation fails after DVC started it
    out = run(["dvc", "repro", "-s", "evaluate"], project, fails=True)
    assert stages_run(out) == ["evaluate"]
    assert ("error: data/ood/ood.pt cannot be read" in out and "`dvc checkout -f data/ood/ood.pt`" in out
            and "`dvc repro -f -s prepare_ood`" in out and "Traceback" not in out)
    assert {p: p.read_bytes() for p in metrics} == before
    assert not list((project / "metrics").rglob(".*.tmp-*"))
    run(["dvc", "checkout", "-f", "data/ood/ood.pt"], project)  # what the message says to do
    assert "up to date" in run(["dvc", "status"], project)


def test_dsa_trains_no_experts_and_writes_the_same_artefact_and_mtt_gets_its_experts_back(project):
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
    # switching back to mtt restores the trained experts from DVC's run cache instead of training them again
    set_params(project, method="mtt")
    out = run(["dvc", "repro", "train_experts"], project)
    assert "Running stage 'train_experts'" not in out and "Stage 'train_experts' is cached" in out
    assert len(list((project / "data/experts").glob("expert_*.pt"))) == 2


def test_editing_the_other_methods_options_reruns_nothing(project):
    set_params(project, distill__dsa__iterations=4)  # method is mtt: distill tracks distill.mtt only
    out = run(["dvc", "repro"], project)
    assert stages_run(out) == ["check_params"]  # checked, and its unchanged output reruns nothing else


def test_real_outliers_from_the_embedded_pool(project):
    import torch

    set_params(project, outliers__source="oe", outliers__oe__max_images=50)
    out = run(["dvc", "repro", "distill"], project)  # evaluation reads an OE set as it reads a POE one
    assert "Running stage 'prepare_data'" not in out and "Running stage 'prepare_outliers'" in out
    pool = OutlierPool.load(project / OutlierPool.PATH)
    assert pool.kinds == ("oe",) and pool.x.shape == (50, 1, 28, 28)
    assert torch.load(project / "data/distilled/distilled.pt", weights_only=True)["x_out"].shape[0] == 20


def test_zca_is_recorded_with_the_distilled_set(project):
    import torch

    set_params(project, data__zca=True)
    run(["dvc", "repro"], project)
    distilled = torch.load(project / "data/distilled/distilled.pt", weights_only=True)
    assert distilled["zca"] is not None and distilled["zca"]["eigvecs"].shape == (784, 784)
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert 0 <= metrics["distilled"]["convnet"]["accuracy"]["mean"] <= 100


def test_a_smoke_run_times_every_stage_and_leaves_the_workspace_as_it_was(project):
    """`presets run NAME --smoke`: a temporary DVC experiment at the preset's shapes; it prints each stage's
    time and the full run's, and the workspace's params, dvc.lock and metrics keep their bytes."""
    preset = {"ipc": 3, "network": {"width": 16}, "experts": {"num_experts": 20, "epochs": 10},
              "data": {"train_limit": 0}, "evaluate": {"num_eval": 5, "epochs": 300}}
    (project / "presets").mkdir()
    (project / "presets" / "mini.yaml").write_text(yaml.safe_dump(preset))
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny results"], project)
    watched = ["params.yaml", "dvc.lock", *sorted(str(p.relative_to(project)) for p in (project / "metrics").rglob("*.json"))]
    before = {f: (project / f).read_bytes() for f in watched}
    out = run([sys.executable, "-m", "trustdd.experiments.presets", "run", "mini", "--smoke", "--keep",
               "-S", "evaluate.scores=[msp]"], project)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    end = next(i for i, line in enumerate(lines) if line.startswith("full run of mini"))
    rows = {line.split()[0]: line for line in lines[start + 1 : end]}
    assert set(rows) == {"check_params", "prepare_data", "prepare_ood", "prepare_outliers", "train_experts",
                         "distill", "evaluate", "total"}
    assert "ms/unit x 1.2e+07" in rows["train_experts"]  # 20 experts x 10 epochs x all 60,000 train images
    assert "ms/unit x 6" in rows["distill"]  # the tiny project's 3 iterations x 2 syn_steps
    assert "ms/unit x 1.35e+05" in rows["evaluate"]  # 5 nets x 3 sets x 300 epochs x 30 images
    assert {f: (project / f).read_bytes() for f in watched} == before
    assert "mini-smoke" in run(["dvc", "exp", "list"], project)  # --keep: there to inspect, else removed
