import json
from pathlib import Path

import torch

from trustdd.experts import ExpertBuffer, ExpertConfig, expert_path, train_experts
from trustdd.nn.networks import NetSpec, flat_params, init_network
from trustdd.nn.training import seed_from
from trustdd.runtime import generator

SPEC = NetSpec("convnet", channels=1, image_size=8, num_classes=2, width=4, depth=1)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.arange(2).repeat(20)
    x[y == 1] += 1.5  # separable classes
    return x, y, torch.randn(10, 1, 8, 8, generator=g)


def test_trajectories_have_a_snapshot_per_epoch(tmp_path):
    x, y, pool = _data()
    cfg = ExpertConfig(num_experts=2, epochs=3, lr=0.05, batch_size=16)
    meta = train_experts(tmp_path, SPEC, x, y, pool, x, y, cfg, 0.5, seed=0, device=torch.device("cpu"))
    num_params = sum(p.numel() for p in SPEC.build().parameters())
    for i in range(2):
        traj = torch.load(expert_path(tmp_path, i), weights_only=True)["trajectory"]
        assert traj.shape == (4, num_params) and traj.dtype == torch.float32
        assert not torch.equal(traj[0], traj[-1])
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk["num_params"] == num_params and on_disk["uses_outliers"] is True
    assert [len(r["history"]) for r in meta["experts"]] == [3, 3]
    # two experts start from different initialisations; a rerun reproduces both exactly
    a = torch.load(expert_path(tmp_path, 0), weights_only=True)["trajectory"]
    b = torch.load(expert_path(tmp_path, 1), weights_only=True)["trajectory"]
    assert not torch.equal(a[0], b[0])
    train_experts(tmp_path / "again", SPEC, x, y, pool, x, y, cfg, 0.5, seed=0, device=torch.device("cpu"))
    assert torch.equal(a, torch.load(expert_path(tmp_path / "again", 0), weights_only=True)["trajectory"])


def test_first_snapshot_is_the_seeded_initialisation(tmp_path):
    x, y, _ = _data()
    train_experts(tmp_path, SPEC, x, y, None, x, y, ExpertConfig(1, 1, batch_size=16), 0.5, 0, torch.device("cpu"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["uses_outliers"] is False
    traj = ExpertBuffer(tmp_path).trajectory(0)
    assert traj.shape[0] == 2
    assert torch.isfinite(traj).all()
    expected_init = init_network(SPEC, seed=seed_from(generator(0, "expert", 0)))
    assert torch.equal(traj[0], flat_params(expected_init))


def test_buffer_loads_lazily_and_evicts(tmp_path):
    x, y, _ = _data()
    train_experts(tmp_path, SPEC, x, y, None, x, y, ExpertConfig(3, 1, batch_size=16), 0.5, 0, torch.device("cpu"))
    buf = ExpertBuffer(tmp_path, cache=2)
    assert buf.num_experts == 3 and buf.epochs == 1 and buf.spec == SPEC
    assert buf._cache == {}
    for i in range(3):
        buf.trajectory(i)
    assert sorted(buf._cache) == [1, 2]


def test_buffer_size_is_reported_and_trajectories_are_memory_mapped(tmp_path):
    x, y, _ = _data()
    meta = train_experts(tmp_path, SPEC, x, y, None, x, y, ExpertConfig(2, 2, batch_size=16), 0.5, 0, torch.device("cpu"))
    files = [expert_path(tmp_path, i) for i in range(2)]
    assert meta["bytes_on_disk"] == sum(f.stat().st_size for f in files)
    assert meta["bytes_on_disk"] >= 2 * 3 * meta["num_params"] * 4  # 2 experts x 3 snapshots x float32
    traj = ExpertBuffer(tmp_path).trajectory(1)
    assert torch.equal(traj, torch.load(files[1], weights_only=True)["trajectory"])
    # memory-mapped, not read: the file is mapped into this process while the buffer holds it
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(files[1]) in maps.read_text() and str(files[0]) not in maps.read_text()


def test_worker_processes_write_the_same_trajectories_for_any_number_of_them(tmp_path):
    x, y, pool = _data()
    cfg = ExpertConfig(num_experts=3, epochs=2, lr=0.05, batch_size=16)
    metas = {}
    for workers in (1, 2):
        metas[workers] = train_experts(tmp_path / str(workers), SPEC, x, y, pool, x, y, cfg, 0.5, 0, torch.device("cpu"), workers)
    for i in range(3):
        one = torch.load(expert_path(tmp_path / "1", i), weights_only=True)["trajectory"]
        two = torch.load(expert_path(tmp_path / "2", i), weights_only=True)["trajectory"]
        assert torch.equal(one, two) and one.shape[0] == 3
    assert metas[1]["experts"] == metas[2]["experts"] and [r["expert"] for r in metas[2]["experts"]] == [0, 1, 2]
