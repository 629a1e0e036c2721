"""Grids: cells from a YAML file, validated before anything is queued; and a tiny grid queued, run and
reported end to end through DVC's queue in a temporary copy of the project."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trustdd.experiments import exp_show, grid, results

PROJECT = Path(__file__).resolve().parents[1]


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def folder(tmp_path):
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def cells(folder: Path, name: str, spec) -> list[grid.Cell]:
    write(folder / "grids" / f"{name}.yaml", spec)
    return grid.cells(name, folder / "grids", folder / "params.yaml", PROJECT / "presets")


def test_cells_are_every_combination_in_axis_order_with_the_fixed_values(folder):
    got = cells(folder, "g", {"axes": {"outliers.source": ["none", "poe"], "ipc": [1, 10]}, "set": {"evaluate.num_eval": 5}})
    assert [c.name for c in got] == ["g-none-ipc1", "g-none-ipc10", "g-poe-ipc1", "g-poe-ipc10"]
    assert got[1].overrides == {"evaluate.num_eval": 5, "outliers.source": "none", "ipc": 10}
    assert got[1].command() == [
        "dvc", "exp", "run", "--queue", "-n", "g-none-ipc10",
        "-S", "evaluate.num_eval=5", "-S", "outliers.source=none", "-S", "ipc=10",
    ]
    assert got[1].params["ipc"] == 10 and got[1].params["evaluate"]["num_eval"] == 5
    assert got[1].params["outliers"]["per_type"] == 3000  # the rest of params.yaml stays


def test_the_shipped_grids_validate():
    shipped = grid.names(PROJECT / "grids")
    assert {"default", "paper-cifar10"} <= set(shipped)
    for name in shipped:
        got = grid.cells(name, PROJECT / "grids", PROJECT / "params.yaml", PROJECT / "presets")
        assert got and all(c.name.startswith(f"{name}-") for c in got)
    paper = grid.cells("paper-cifar10", PROJECT / "grids", PROJECT / "params.yaml", PROJECT / "presets")
    by_name = {c.name: c for c in paper}
    # a preset axis: the preset's settings, then the grid's fixed values, then the cell's own axis values
    cell = by_name["paper-cifar10-cifar10-ipc50-oe"]
    assert cell.params["ipc"] == 50 and cell.params["dataset"] == "cifar10"
    assert cell.params["outliers"]["source"] == "oe" and cell.params["outliers"]["oe"]["format"] == "npy"
    assert cell.params["network"]["width"] == 128


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"axes": {"ipcs": [1, 2]}}, "'ipcs' is not a key of params.yaml"),
        ({"axes": {"outliers.sourse": ["none"]}}, "did you mean outliers.source"),
        ({"axes": {"ipc": []}}, "axes.ipc = []; expected a non-empty list"),
        ({"axes": {"ipc": [1, 1]}}, "repeats a value"),
        ({"axes": {"ipc": [1]}, "sett": {}}, "unknown key(s) sett"),
        ({"axes": {"outliers.source": ["poe", "pie"]}}, "cell g-pie"),
        ({"axes": {"ipc": [1]}, "set": {"evaluate.num_eval": 0}}, "evaluate.num_eval"),
        ({"axes": {"preset": ["nope"]}}, "preset 'nope' not found"),
        ("just text", "expected a mapping with `axes:`"),
    ],
)
def test_a_bad_grid_is_refused_before_anything_is_queued(folder, spec, message):
    with pytest.raises(grid.GridError, match=None) as err:
        cells(folder, "g", spec)
    assert message in str(err.value)


def test_an_unknown_grid_names_the_valid_ones(folder):
    write(folder / "grids" / "one.yaml", {"axes": {"ipc": [1]}})
    with pytest.raises(grid.GridError, match="grid 'two' not found in .*; valid: one"):
        grid.cells("two", folder / "grids", folder / "params.yaml")


def _exp(name, state="success", params=None, metrics=None, baseline="b" * 40):
    return exp_show.Experiment(name, "r" * 40, baseline, "experiment", state, params=params or {},
                               metrics=metrics if metrics is not None else {"distilled": {}})


def test_plan_skips_done_cells_waits_for_running_ones_and_reruns_failed_or_changed_ones(folder):
    a, b, c, d, e = cells(folder, "g", {"axes": {"ipc": [1, 2, 3, 4, 5]}})
    experiments = [
        _exp("g-ipc1", params=json.loads(json.dumps(a.params))),  # done, same params (through JSON)
        _exp("g-ipc2", state="running"),
        _exp("g-ipc3", state="failed"),
        _exp("g-ipc4", params={**d.params, "seed": 99}),  # ran with other params
        _exp("g-ipc5", params=e.params, baseline="c" * 40),  # on another commit
    ]
    todo = grid.plan([a, b, c, d, e], experiments, "b" * 40)
    assert [x.name for x in todo.skip] == ["g-ipc1"]
    assert [x.name for x in todo.wait] == ["g-ipc2"]
    assert [x.name for x in todo.requeue] == ["g-ipc3", "g-ipc4"]
    assert [x.name for x in todo.queue] == ["g-ipc5"]


def test_params_compare_as_values():
    assert grid._same({"lr": 1e-4, "l": [1, "a"]}, {"lr": "1.0e-04", "l": [1.0, "a"]})
    assert not grid._same({"lr": 1e-4}, {"lr": 1e-3})
    assert not grid._same({"z": True}, {"z": 1})
    assert not grid._same({"a": 1}, {"a": 1, "b": 2})


# ---------------------------------------------------------------- end to end, through DVC's queue

TINY = {
    "ipc": 2,
    "workers": 0,  # in-process: two worker processes would each import torch again (seconds) for tiny jobs
    "data": {"train_limit": 200},
    "ood": {"size": 30, "sets": ["mnist", "uniform_noise"]},
    "network": {"width": 8, "depth": 2},
    "outliers": {"per_type": 20},
    "experts": {"num_experts": 1, "epochs": 2, "batch_size": 64},
    "distill": {"mtt": {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1, "batch_syn": 0}},
    "evaluate": {"num_eval": 1, "epochs": 2, "scores": ["msp", "energy"]},
}


def _merge(base: dict, update: dict) -> dict:
    for k, v in update.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _run(cmd, cwd, fails=False):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # the grid must make each experiment import its own copy of trustdd
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert (proc.returncode != 0) == fails, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_tiny_grid_runs_through_the_queue_and_its_table_is_the_cells_metrics(tmp_path):
    from trustdd.data import datasets

    if not datasets.DEBIAN_FASHION_MNIST.exists() and not (PROJECT / "data/raw/FashionMNIST/raw").exists():
        pytest.skip("Fashion-MNIST is not installed (make test installs it)")
    root = tmp_path / "project"
    root.mkdir()
    for name in ["stages", "trustdd", "dvc.yaml", ".gitignore"]:
        src = PROJECT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    params = _merge(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY)
    params["data"]["root"] = str(PROJECT / "data" / "raw")
    write(root / "params.yaml", params)
    write(root / "grids" / "tiny.yaml", {"axes": {"outliers.source": ["none", "poe"]}, "set": {"ipc": 2}})
    # a valid cell that fails when it runs: SVHN's files are not under data.root (prepare_ood lists them)
    write(root / "grids" / "broken.yaml", {"axes": {"ood.sets": [["svhn"]]}})
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    _run(["dvc", "config", "core.analytics", "false"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], root)

    out = _run([sys.executable, "-m", "trustdd.experiments.grid", "tiny", "--jobs", "2", "--poll", "2"], root)
    assert "2 cells; 0 done, 0 queued or running, 0 to run again, 2 to queue" in out
    assert "grid tiny: all 2 cells done" in out
    # again: both cells are done on this commit with these params, nothing is queued
    again = _run([sys.executable, "-m", "trustdd.experiments.grid", "tiny", "--poll", "2"], root)
    assert "2 done" in again and "dvc exp run" not in again

    # the failed cell is named, with the end of its log
    failed = _run([sys.executable, "-m", "trustdd.experiments.grid", "broken", "--poll", "2"], root, fails=True)
    assert "FAILED broken-svhn" in failed and "SVHN" in failed.split("FAILED broken-svhn")[1]
    assert "grid broken: 1 of 1 cells failed" in failed

    # the table from the live experiments equals each cell's own metrics.json
    saved = tmp_path / "saved"
    _run([sys.executable, "-m", "trustdd.experiments.results", "--grid", "tiny", "--out", str(saved), "--save", str(saved / "exp.json")], root)
    experiments = exp_show.parse(json.loads((saved / "exp.json").read_text()))
    df = results.select(results.frame(experiments), grid="tiny")
    assert sorted(df["experiment"].unique()) == ["tiny-none", "tiny-poe"]
    for name in ("tiny-none", "tiny-poe"):
        rev = next(e.rev for e in experiments if e.name == name)
        own = json.loads(_run(["git", "show", f"{rev}:metrics/metrics.json"], root))
        row = df[(df["experiment"] == name) & (df["training_set"] == "distilled")].iloc[0]
        assert row["accuracy"] == own["distilled"]["convnet"]["accuracy"]["mean"]
        assert row["msp_fpr95_in"] == own["distilled"]["convnet"]["msp"]["fpr95_in"]["mean"]
        assert row["gain_random_accuracy"] == own["distilled_minus_random"]["convnet"]["accuracy"]["mean"]
        assert row["outliers.source"] == name.split("-")[1] and row["ipc"] == 2
        acc = own["distilled"]["convnet"]["accuracy"]
        assert f"{acc['mean']:.2f} ± {acc['std']:.2f}" in (saved / "table.md").read_text()
    table = (saved / "table.md").read_text()
    assert "| method | outliers.source | ipc 2 |" in table and "| mtt | none |" in table
    assert (saved / "scatter.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(saved / "rows.csv")) == len(df)


def test_waiting_reads_dvc_queue_status_and_restarts_stopped_workers(folder, monkeypatch):
    """DVC's workers can stop with tasks still queued (treeverse/dvc#10562): the grid starts them again."""
    a, b = cells(folder, "g", {"axes": {"ipc": [1, 2]}})
    statuses = iter([
        # an old finished task of the same name (from an earlier run) is not this run's
        "Task     Name    Created    Status\nold1234  g-ipc1  01:00 PM   Failed\nabc1234  g-ipc1  02:00 PM   Running\n"
        "def5678  g-ipc2  02:00 PM   Queued\n\nWorker status: 1 active, 0 idle\n",
        "Task     Name    Created    Status\nabc1234  g-ipc1  02:00 PM   Success\ndef5678  g-ipc2  02:00 PM   Queued\n"
        "\nWorker status: 0 active, 0 idle\n",
        "Task     Name    Created    Status\nabc1234  g-ipc1  02:00 PM   Success\ndef5678  g-ipc2  02:00 PM   Queued\n"
        "\nWorker status: 0 active, 0 idle\n",
        "Task     Name    Created    Status\nabc1234  g-ipc1  02:00 PM   Success\ndef5678  g-ipc2  02:00 PM   Queued\n"
        "\nWorker status: 0 active, 0 idle\n",
        "Task     Name    Created    Status\nabc1234  g-ipc1  02:00 PM   Success\ndef5678  g-ipc2  02:00 PM   Failed\n"
        "\nWorker status: 0 active, 0 idle\n",
    ])
    monkeypatch.setattr(grid, "_dvc", lambda *args, check=True: subprocess.CompletedProcess(args, 0, next(statuses), ""))
    started = []
    monkeypatch.setattr(grid, "start_queue", started.append)
    monkeypatch.setattr(grid.time, "sleep", lambda s: None)
    out = io.StringIO()
    final = grid.wait_for([a, b], {"old1234"}, 2, 0, out)
    assert {n: t.status for n, t in final.items()} == {"g-ipc1": "Success", "g-ipc2": "Failed"}
    assert final["g-ipc2"].id == "def5678"
    assert started == [2] and "workers stopped with cells queued" in out.getvalue()
