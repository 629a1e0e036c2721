import os
import subprocess
import sys

import pytest
import torch

from trustdd.runtime import atomic_dir, generator, remove_stale_tmp, resolve_device, write_all


def test_atomic_dir_replaces_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists(), "nothing is visible before the block ends"
    assert (out / "new.txt").read_text() == "new" and not (out / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_old_output_when_interrupted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_generators_are_per_purpose_and_reproducible():
    a = torch.rand(3, generator=generator(0, "experts", 1))
    assert torch.equal(a, torch.rand(3, generator=generator(0, "experts", 1)))
    assert not torch.equal(a, torch.rand(3, generator=generator(0, "experts", 2)))
    assert not torch.equal(a, torch.rand(3, generator=generator(1, "experts", 1)))


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: unknown value 'gpu0'; valid choices: auto, cpu"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_scratch_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "experts"
    dead = tmp_path / f".experts.tmp-{_dead_pid()}"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "expert_000.pt").write_bytes(b"x" * 1000)
    dead_file = tmp_path / f".experts.tmp-{_dead_pid()}"
    dead_file.write_text("half")
    live = tmp_path / f".experts.tmp-{os.getppid()}"  # a running process: maybe another run's, left alone
    live.mkdir()
    other = tmp_path / ".ood.tmp-1"  # another output's: not this stage's to clean
    other.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["experts", live.name, other.name])
    assert f"removed {dead}, left by a run that was killed" in capsys.readouterr().err
    assert remove_stale_tmp(out) == []


def test_write_all_replaces_every_file_or_none(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    blocker = tmp_path / "plots"
    blocker.write_text("a file where a folder is needed")
    with pytest.raises(OSError):
        write_all({a: "new a", b: "new b", blocker / "roc.json": "x"})
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "plots"]
    write_all({a: "new a", b: "new b"})
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "plots"]


def test_determinism_is_asked_for_without_importing_the_compiler():
    """configure_determinism turns on ATen's deterministic kernels (warnings only where none exists) in a
    fresh process, and leaves torch._dynamo unimported (importing it costs every stage about 2 s)."""
    code = (
        "import sys, torch; from trustdd.runtime import configure_determinism; configure_determinism(3); "
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
        "'torch._dynamo' in sys.modules, torch.initial_seed())"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False", "3"]
