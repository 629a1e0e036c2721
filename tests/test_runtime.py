import pytest
import torch

from trustdd.runtime import atomic_dir, generator, resolve_device


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
