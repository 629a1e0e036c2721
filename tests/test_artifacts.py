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


def _examples():
    """One small instance of every artefact class, with every optional field set."""
    from trustdd.data.images import InputTransform
    from trustdd.data.ood import OODSets
    from trustdd.data.prepared import Prepared
    from trustdd.data.whitening import ZCA
    from trustdd.distill.distilled import DistilledFile, DistilledSet, StartingSets
    from trustdd.outliers.pool import OutlierPool

    g = torch.Generator().manual_seed(0)
    u8 = lambda n: torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)  # noqa: E731
    f32 = lambda n: torch.randn(n, 1, 4, 4, generator=g)  # noqa: E731
    zca = ZCA.fit(f32(20), reg=0.1)
    start = StartingSets.of(f32(4), torch.tensor([0, 0, 1, 1]), f32(4), 0.01, torch.rand(4, 2, generator=g))
    result = DistilledSet(f32(4), torch.tensor([0, 0, 1, 1]), f32(4), 0.02, "mtt", start, y_soft=torch.rand(4, 2, generator=g))
    return [
        Prepared("toy", ("a", "b"), (0.5,), (0.25,), u8(6), torch.tensor([0, 1] * 3), u8(2), torch.tensor([0, 1]),
                 zca, {"train.gz": "0" * 32}, (("bad.png", "cannot decode"),)),
        OODSets({"noise": u8(3), "mnist": u8(2)}, {"noise": "far"}, skipped={"dtd": "missing"}),
        OutlierPool(u8(5), torch.tensor([0, 0, 1, 1, 1]), ("jigsaw", "invert"), "poe"),
        DistilledFile.of(result, "toy", InputTransform((0.5,), (0.25,), zca)),
    ]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(_same(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__)
    return a == b


@pytest.mark.parametrize("example", _examples(), ids=lambda e: type(e).__name__)
def test_every_artifact_saves_to_its_path_and_loads_back_field_for_field(project, example):
    cls = type(example)
    written = example.save(project / cls.PATH.parent)
    assert written == project / cls.PATH
    assert _same(cls.load(cls.PATH), example)
    assert _same(cls.load(cls.PATH).to_dict(), example.to_dict())


@pytest.mark.parametrize("example", _examples(), ids=lambda e: type(e).__name__)
def test_a_file_without_an_artifacts_fields_is_named_with_how_to_restore_it(project, example):
    cls = type(example)
    d = example.to_dict()
    del d[next(iter(d))]  # a required field missing (an older or foreign file)
    artifacts.save(d, cls.PATH)
    with pytest.raises(ArtifactError) as err:
        cls.load()
    msg = str(err.value)
    assert msg.startswith(f"{cls.PATH} is not a {cls.__name__} file (KeyError")
    assert f"dvc repro -f -s {artifacts.producer(cls.PATH)}" in msg
