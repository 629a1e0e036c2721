"""torch.distributed groups: the group of one, and real 2-process gloo groups started by torchrun's
launcher (trustdd.distributed.launch) running small scripts written here."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import apply_overrides
from test_mtt import _random_experts, make_task, mtt
from test_pipeline import TINY, _merge, run

from trustdd import distributed
from trustdd.distributed import SINGLE, Group, RankFailedError

PROJECT = Path(__file__).resolve().parents[1]


def test_a_group_of_one_needs_no_torch_distributed():
    assert not torch.distributed.is_initialized()
    assert SINGLE.is_main and SINGLE.shard(range(5)) == [0, 1, 2, 3, 4]
    assert SINGLE.gather({"a": 1}) == [{"a": 1}] and SINGLE.broadcast(7) == 7 and SINGLE.sum(2.5) == 2.5
    x = torch.ones(3, requires_grad=True)
    (x * torch.tensor([2.0, 4.0, 6.0])).sum().backward()
    grad = x.grad
    SINGLE.average_grads([x], 1)
    assert x.grad is grad  # one term on one rank: untouched, not even copied
    SINGLE.average_grads([x], 2)
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_mps_takes_one_process():
    with pytest.raises(ValueError, match=r"parallel.nproc: invalid value 2; expected 1 with device 'mps'"):
        distributed.ParallelConfig(nproc=2).check("mps")
    distributed.ParallelConfig(nproc=1).check("mps")


def test_launched_by_torchrun_needs_rank_and_world_size(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert not distributed.launched_by_torchrun()
    monkeypatch.setenv("RANK", "1")
    assert distributed.launched_by_torchrun()


def test_ranks_shard_items_round_robin():
    assert [Group(r, 3).shard(list(range(8))) for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert [Group(r, 4).shard(list(range(2))) for r in range(4)] == [[0], [1], [], []]
    assert SINGLE.gather_shards(["a", "b"]) == ["a", "b"]


def _script(tmp_path: Path, body: str) -> Path:
    """A script run by every rank: ``group`` and ``out`` (argv[1]) are defined for ``body``."""
    path = tmp_path / "ranks.py"
    path.write_text(
        "import json, os, signal, sys, torch\n"
        "from pathlib import Path\n"
        "from trustdd import distributed\n"
        "out = Path(sys.argv[1])\n"
        "with distributed.join(distributed.ParallelConfig(nproc=2), 'cpu') as (group, device):\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return path


def test_collectives_on_two_gloo_processes(tmp_path):
    out = tmp_path / "result.json"
    script = _script(tmp_path, """
        t = torch.full((2,), float(group.rank + 1), requires_grad=True)
        (t * (group.rank + 1)).sum().backward()  # grad: rank + 1 on every element
        group.average_grads([t], group.world)
        shared = torch.tensor([float(group.rank)])
        group.broadcast_tensors(shared)
        result = {
            "rank": group.rank, "world": group.world, "shard": group.shard(list(range(5))),
            "sum": group.sum(group.rank + 0.5), "broadcast": group.broadcast(f"from {group.rank}"),
            "grad": t.grad.tolist(), "tensor": shared.tolist(), "threads": torch.get_num_threads(),
        }
        result["unsharded"] = group.gather_shards([f"item {i}" for i in group.shard(list(range(5)))])
        gathered = group.gather(result)
        if group.is_main:
            out.write_text(json.dumps(gathered))
    """)
    distributed.launch(2, argv=[str(script), str(out)])
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world"] for r in ranks} == {2}
    assert [r["shard"] for r in ranks] == [[0, 2, 4], [1, 3]]
    assert [r["unsharded"] for r in ranks] == [[f"item {i}" for i in range(5)], None]  # item order, on rank 0
    assert {r["sum"] for r in ranks} == {2.0} and {r["broadcast"] for r in ranks} == {"from 0"}
    assert all(r["grad"] == [1.5, 1.5] and r["tensor"] == [0.0] for r in ranks)  # (1 + 2) / 2; rank 0's
    assert {r["threads"] for r in ranks} == {1}  # one thread per process unless OMP_NUM_THREADS says otherwise


FAILING_WRITER = """
    with group.atomic_dir(out) as tmp:
        (tmp / f"part{group.rank}").write_text("new")
        group.barrier()  # both parts are in the shared scratch folder
        if group.rank == 1 and os.environ.get("FAIL") == "exit":
            sys.exit(3)
        if group.rank == 1 and os.environ.get("FAIL") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how, message", [("exit", "exit code 3"), ("kill", r"killed by SIGKILL \(out of memory\?\)")])
def test_a_failed_rank_stops_the_stage_and_leaves_the_last_output(tmp_path, monkeypatch, how, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part0").write_text("old")
    script = _script(tmp_path, FAILING_WRITER)
    monkeypatch.setenv("FAIL", how)
    with pytest.raises(RankFailedError, match=rf"parallel: rank 1 of 2 failed \({message}\); the other ranks were stopped"):
        distributed.launch(2, outputs=[out], argv=[str(script), str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ranks.py"]  # no scratch folder left
    assert [(p.name, p.read_text()) for p in out.iterdir()] == [("part0", "old")]
    monkeypatch.setenv("FAIL", "")  # the next run starts clean and replaces the output whole
    distributed.launch(2, outputs=[out], argv=[str(script), str(out)])
    assert sorted((p.name, p.read_text()) for p in out.iterdir()) == [("part0", "new"), ("part1", "new")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ranks.py"]


# Trajectory-parallel distillation: 2 ranks dividing an iteration's trajectories (2: one each; 3: two and one)
# equal 1 process matching the same ones (to float rounding: the sums are added in another order), and differ
# from 1 trajectory per iteration. Every learned tensor is covered: images,
# outliers, the lr, and learned soft labels; both ways of computing the gradients.
MTT_OPTIONS = [
    dict(iterations=4, syn_steps=2, expert_epochs=1, max_start_epoch=2, lr_img=10.0, log_every=2, trajectories=2),
    dict(iterations=3, syn_steps=3, expert_epochs=1, max_start_epoch=2, lr_img=10.0, log_every=1, memory="constant",
         labels="learned", batch_syn=4, trajectories=3),
]


@pytest.mark.parametrize("options", MTT_OPTIONS, ids=["unrolled-2", "constant-learned-labels-3"])
def test_two_ranks_distill_what_one_process_averaging_their_trajectories_distills(tmp_path, options):
    out = tmp_path / "ranks.pt"
    script = _script(tmp_path, f"""
        sys.path.insert(0, {str(PROJECT / "tests")!r})
        from test_mtt import _random_experts, make_task, mtt
        task = make_task(ipc=2, pool=12, experts=_random_experts())
        task.group = group
        r = mtt(**{options!r}).run(task)
        if group.is_main:
            torch.save({{"x_in": r.x_in, "x_out": r.x_out, "lr": r.lr, "y_soft": r.y_soft, "history": r.history}}, out)
    """)
    distributed.launch(2, argv=[str(script), str(out)])
    ranks = torch.load(out)
    one = mtt(**options).run(make_task(ipc=2, pool=12, experts=_random_experts()))
    plain = mtt(**{**options, "trajectories": 1}).run(make_task(ipc=2, pool=12, experts=_random_experts()))
    for key in ("x_in", "x_out") + (("y_soft",) if options.get("labels") else ()):
        assert torch.allclose(ranks[key], getattr(one, key), atol=1e-5), key
        assert not torch.allclose(ranks[key], getattr(plain, key), atol=1e-3), f"{key}: one trajectory would do as well"
    assert ranks["lr"] == pytest.approx(one.lr, rel=1e-5)
    assert [h["iteration"] for h in ranks["history"]] == [h["iteration"] for h in one.history]
    for a, b in zip(ranks["history"], one.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)  # the mean over both trajectories



# ---- the three stages on 2 processes, in a tiny project run stage by stage (no DVC) ----

STAGES = ["prepare_data", "prepare_ood", "prepare_outliers", "train_experts", "distill", "evaluate"]
EVAL_FILES = ["metrics.json", "ood.json", "report.md", "eval_curves.json", "plots/roc.json", "plots/score_histograms.json"]


def _stage(root: Path, name: str, fails: bool = False, **changes) -> str:
    """Run one stage (as dvc.yaml does: ``python -m stages.NAME``) in ``root`` with params.yaml = the tiny base with ``changes``."""
    params = apply_overrides(copy.deepcopy(_tiny_params()), **changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run([sys.executable, "-m", f"stages.{name}"], root, fails=fails)


def _tiny_params() -> dict:
    params = _merge(yaml.safe_load((PROJECT / "params.yaml").read_text()), copy.deepcopy(TINY))
    params["data"]["root"] = str(PROJECT / "data" / "raw")  # reuse the unpacked files, if any
    params["workers"] = 2  # one-thread processes: the same bytes as one-thread ranks
    return params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny project run once with parallel.nproc 1; its outputs are kept under ref/."""
    root = tmp_path_factory.mktemp("parallel")
    for name in ["stages", "trustdd"]:
        shutil.copytree(PROJECT / name, root / name)
    for name in STAGES:
        _stage(root, name)
    shutil.copytree(root / "data", root / "ref" / "data")
    shutil.copytree(root / "metrics", root / "ref" / "metrics")
    return root


def _restore(root: Path, output: str) -> None:
    shutil.rmtree(root / output)
    shutil.copytree(root / "ref" / output, root / output)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_experts_on_two_ranks_are_the_files_each_expert_gives_alone(tiny):
    out = _stage(tiny, "train_experts", parallel__nproc=2, workers=0)
    assert "on 2 processes" in out
    assert _files(tiny / "data/experts") == _files(tiny / "ref/data/experts")  # rank i mod 2 wrote expert i
    meta = json.loads((tiny / "data/experts/meta.json").read_text())
    assert [r["expert"] for r in meta["experts"]] == [0, 1]


@pytest.mark.slow
def test_distill_on_two_ranks_equals_one_process_matching_the_same_two_trajectories(tiny):
    _stage(tiny, "distill", distill__mtt__trajectories=2)
    one = torch.load(tiny / "data/distilled/distilled.pt")
    one_curve = json.loads((tiny / "metrics/distill_curve.json").read_text())["distill"]
    _stage(tiny, "distill", distill__mtt__trajectories=2, parallel__nproc=2)
    two = torch.load(tiny / "data/distilled/distilled.pt")
    two_curve = json.loads((tiny / "metrics/distill_curve.json").read_text())["distill"]
    ref = torch.load(tiny / "ref/data/distilled/distilled.pt")
    for key in ("x_in", "x_out"):
        assert torch.allclose(two[key], one[key], atol=1e-5), key
        assert not torch.allclose(two[key], ref[key], atol=1e-3), f"{key}: 2 ranks must match 2 trajectories, not 1"
    assert torch.equal(two["init"]["x_in"], ref["init"]["x_in"])  # the same start on every rank
    assert two["lr"] == pytest.approx(one["lr"], rel=1e-5)
    assert [r["loss"] for r in two_curve] == pytest.approx([r["loss"] for r in one_curve], rel=1e-5)


@pytest.mark.slow
def test_evaluation_on_two_ranks_gives_the_single_process_bytes(tiny):
    _restore(tiny, "data/distilled")  # the reference set (another test may have replaced it)
    _stage(tiny, "evaluate", parallel__nproc=2, workers=0)  # every net on one thread, as in one-thread workers
    for name in EVAL_FILES:
        assert (tiny / "metrics" / name).read_bytes() == (tiny / "ref/metrics" / name).read_bytes(), name


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The process that torchrun started as ``rank`` for the stage process ``launcher``."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"TORCHELASTIC_RUN_ID=trustdd-{launcher}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_rank_killed_mid_stage_fails_the_stage_and_keeps_the_last_experts(tiny):
    _restore(tiny, "data/experts")
    params = apply_overrides(copy.deepcopy(_tiny_params()), parallel__nproc=2, workers=0, experts__epochs=60)
    (tiny / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(tiny))
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_experts"], cwd=tiny, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tiny / "data").glob(".experts.tmp-*")):  # the ranks are training
        time.sleep(0.2)
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None, "rank 1 not found"
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "error: parallel: rank 1 of 2 failed (killed by SIGKILL (out of memory?)); the other ranks were stopped" in err
    assert not list((tiny / "data").glob(".experts.tmp-*"))  # no partial output
    assert _files(tiny / "data/experts") == _files(tiny / "ref/data/experts")  # the last complete one


def test_a_stage_run_as_a_module_is_relaunched_as_that_module(tmp_path):
    """dvc.yaml runs ``python -m stages.NAME``; the ranks must run the same module (so that the working
    directory's trustdd stays first on their import path), and a plain script stays a script."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    code = "from trustdd.distributed import this_command\nprint(this_command())\n"
    (tmp_path / "pkg/stage.py").write_text(code)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{PROJECT}")
    as_module = subprocess.run([sys.executable, "-m", "pkg.stage", "--x"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert as_module.stdout.strip() == "['-m', 'pkg.stage', '--x']", as_module.stderr
    as_script = subprocess.run([sys.executable, "pkg/stage.py", "--x"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert as_script.stdout.strip() == "['pkg/stage.py', '--x']", as_script.stderr
