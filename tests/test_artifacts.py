import shutil
from pathlib import Path

import pytest
import torch

from trustdd import artifacts
from trustdd.artifacts import ArtifactError

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(PROJECT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _truncated(path: Path, keep: int) -> Path:
    artifacts.save({"x": torch.zeros(1000, 1, 28, 28, dtype=torch.uint8), "source": "poe"}, path)
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize("keep", [0, 100, 50000])
@pytest.mark.parametrize("mmap", [False, True])
def test_a_damaged_intermediate_file_is_named_with_how_to_restore_it(project, keep, mmap):
    _truncated(Path("data/outliers/pool.pt"), keep)
    with pytest.raises(ArtifactError) as err:
        artifacts.load("data/outliers/pool.pt", mmap=mmap)
    msg = str(err.value)
    assert msg.startswith("data/outliers/pool.pt cannot be read (")
    assert msg.endswith("restore it from DVC's cache with `dvc checkout -f data/outliers/pool.pt`, "
                        "or make it again with `dvc repro -f -s prepare_outliers`")


def test_the_stage_that_makes_a_file_is_found_in_dvc_yaml(project):
    assert artifacts.producer("data/prepared/ind.pt") == "prepare_data"
    assert artifacts.producer("data/experts/expert_003.pt") == "train_experts"
    assert artifacts.producer("./data/distilled/distilled.pt") == "distill"
    assert artifacts.producer("metrics/metrics.json") == "evaluate"
    assert artifacts.producer("elsewhere/set.pt") is None
    assert "replace it with a complete copy" in artifacts.restore_hint("elsewhere/set.pt")


def test_save_leaves_no_scratch_file_when_it_fails(project):
    with pytest.raises(Exception):
        artifacts.save({"f": lambda: 0}, "data/x.pt")  # a lambda cannot be pickled
    assert list(Path("data").iterdir()) == []


def test_round_trip_and_missing_file(project):
    artifacts.save({"x": torch.arange(3)}, "data/a.pt")
    assert torch.equal(artifacts.load("data/a.pt")["x"], torch.arange(3))
    with pytest.raises(FileNotFoundError, match="data/b.pt does not exist"):
        artifacts.load("data/b.pt")


def test_a_complete_file_with_objects_a_safe_load_refuses_is_not_called_damaged(project):
    import numpy as np

    torch.save({"x": np.zeros(3)}, "set.pt")
    with pytest.raises(ArtifactError) as err:
        artifacts.load("set.pt")
    msg = str(err.value)
    assert "set.pt holds objects other than tensors" in msg and "Unsupported global" in msg
    assert "damaged" not in msg and "\x1b[" not in msg
