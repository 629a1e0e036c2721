"""trustdd.timing: the steps' wall time is recorded only under a smoke run, per stage, and summed back."""

import json

import torch

from trustdd import timing
from trustdd.nn.networks import NetSpec
from trustdd.nn.training import TrainConfig, train_network


def test_nothing_is_recorded_outside_a_smoke_run(tmp_path, monkeypatch):
    monkeypatch.delenv(timing.FILE_ENV, raising=False)
    timing.record(100, 1.0)
    assert list(tmp_path.iterdir()) == [] and timing.read(tmp_path / "none.jsonl") == {}


def test_records_are_per_stage_and_summed(tmp_path, monkeypatch):
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv(timing.FILE_ENV, str(path))
    monkeypatch.setenv(timing.STAGE_ENV, "train_experts")
    timing.record(100, 2.0)
    timing.record(50, 1.0)
    timing.record(0, 5.0)  # no timed work: nothing to record
    monkeypatch.setenv(timing.STAGE_ENV, "evaluate")
    timing.record(30, 0.5)
    assert len(path.read_text().splitlines()) == 3
    assert timing.read(path) == {"train_experts": {"units": 150.0, "seconds": 3.0},
                                 "evaluate": {"units": 30.0, "seconds": 0.5}}


def test_the_training_loop_times_its_steps_after_the_first(tmp_path, monkeypatch):
    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv(timing.FILE_ENV, str(path))
    net = NetSpec("convnet", 1, 8, 3, width=4, depth=1).build()
    x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 3, (20,))
    train_network(net, x, y, None, TrainConfig(epochs=2, lr=0.01, batch_size=8), torch.Generator().manual_seed(0))
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    # 2 epochs x 20 images in batches of 8, 8 and 4: every step but the very first is timed
    assert record["units"] == 2 * 20 - 8 and record["seconds"] > 0 and record["what"] == "train"
