"""Expert trajectories for trajectory matching: networks trained on real data, snapshotted every epoch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trustdd import artifacts
from trustdd.distributed import SINGLE, Group
from trustdd.nn.augment import DSA
from trustdd.nn.networks import NetSpec, flat_params, init_network
from trustdd.nn.training import TrainConfig, predict_logits, seed_from, train_network
from trustdd.options import at_least
from trustdd.runtime import generator
from trustdd.workers import run_jobs


@dataclass(frozen=True)
class ExpertConfig:
    """``experts`` in params.yaml; the defaults are params.yaml's (the CPU default)."""

    num_experts: int = 2
    epochs: int = 6
    lr: float = 0.05
    momentum: float = 0.0  # MTT's experts use none; momentum reaches good experts in fewer epochs on a CPU budget
    batch_size: int = 128
    outlier_ratio: float = 1.0  # outlier images per InD image in each batch (only when a pool exists)

    def check(self) -> None:
        """The section's own rules; raises ParamsError naming ``experts.<key>``, the value and what is valid."""
        for key in ("num_experts", "epochs", "batch_size"):
            at_least(f"experts.{key}", getattr(self, key), 1)

    def train_config(self, lambda_oe: float) -> TrainConfig:
        # MTT's experts: SGD without weight decay at a constant lr.
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            momentum=self.momentum,
            weight_decay=0.0,
            lambda_oe=lambda_oe,
            outlier_ratio=self.outlier_ratio,
            decay_halfway=False,
        )


def expert_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"expert_{index:03d}.pt"


@dataclass(frozen=True)
class _ExpertData:
    """Everything an expert is trained from, sent once to each worker process."""

    folder: Path
    spec: NetSpec
    train_x: torch.Tensor
    train_y: torch.Tensor
    pool_x: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    cfg: ExpertConfig
    lambda_oe: float
    seed: int
    device: torch.device


def _train_one(i: int, d: _ExpertData) -> dict:
    """Train expert ``i`` from its own seed stream and write its trajectory; returns its record."""
    g = generator(d.seed, "expert", i)
    net = init_network(d.spec, seed_from(g), d.device)
    snapshots = [flat_params(net).cpu()]
    pool_x = d.pool_x.to(d.device) if d.pool_x is not None else None

    def snapshot(epoch: int, net: torch.nn.Module, record: dict) -> None:
        snapshots.append(flat_params(net).cpu())

    train_cfg = d.cfg.train_config(d.lambda_oe)
    history = train_network(net, d.train_x.to(d.device), d.train_y.to(d.device), pool_x, train_cfg, g, DSA(), snapshot)
    test_acc = 100.0 * float((predict_logits(net, d.test_x).argmax(1) == d.test_y).float().mean())
    artifacts.save({"trajectory": torch.stack(snapshots)}, expert_path(d.folder, i))
    return {"expert": i, "test_acc": round(test_acc, 4), "history": history}


def train_experts(
    folder: Path,
    spec: NetSpec,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    pool_x: torch.Tensor | None,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    cfg: ExpertConfig,
    lambda_oe: float,
    seed: int,
    device: torch.device,
    workers: int = 0,
    group: Group = SINGLE,
) -> dict | None:
    """Train ``cfg.num_experts`` experts, write one trajectory file each plus ``meta.json``; return meta.
    Expert i depends only on its own seed stream; ``workers`` > 0 trains them in that many one-thread
    processes (the same bytes for any number of them, see trustdd.workers). In a group of several
    processes, expert i is trained and written by rank ``i mod world`` and rank 0 writes ``meta.json``
    once every rank's files are written (the other ranks return None)."""
    folder = Path(folder)
    pool_x = pool_x if pool_x is not None and len(pool_x) else None
    shared = _ExpertData(folder, spec, train_x, train_y, pool_x, test_x, test_y, cfg, lambda_oe, seed, device)
    mine = group.shard(range(cfg.num_experts))
    desc = "experts" if group.world == 1 else f"experts (rank {group.rank})"
    records = group.gather_shards(run_jobs(_train_one, mine, shared, workers, desc=desc))  # after every rank's writes
    if records is None:
        return None
    missing = [str(expert_path(folder, i)) for i in range(cfg.num_experts) if not expert_path(folder, i).exists()]
    if missing:
        raise FileNotFoundError(
            f"expert file(s) {', '.join(missing)} were written by other ranks but are not visible here: the "
            "project folder must be on a filesystem every machine shares (or run on one machine)"
        )
    net = spec.build()
    meta = {
        "spec": asdict(spec),
        "num_experts": cfg.num_experts,
        "epochs": cfg.epochs,
        "num_params": int(sum(p.numel() for p in net.parameters())),
        "param_shapes": {name: list(p.shape) for name, p in net.named_parameters()},
        "uses_outliers": pool_x is not None,
        "bytes_on_disk": sum(expert_path(folder, i).stat().st_size for i in range(cfg.num_experts)),
        "experts": records,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def write_not_needed(folder: Path, method: str) -> dict:
    """The expert stage's output when the chosen method does not use trajectories (e.g. ``dsa``): an
    empty buffer whose meta.json says why, written in a second instead of training any expert."""
    meta = {"num_experts": 0, "epochs": 0, "skipped": f"method {method!r} does not use expert trajectories"}
    (Path(folder) / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class ExpertBuffer:
    """Lazy access to expert trajectories on disk: each expert's file is memory-mapped when first used, so
    only the epochs that are indexed (a start and a target per iteration) are read from disk, and the
    buffer may be far larger than RAM. The ``cache`` most recently used mappings stay open."""

    def __init__(self, folder: Path, cache: int = 32) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} does not exist: run the expert stage first (`dvc repro`)")
        self.meta = json.loads(meta_path.read_text())
        if "skipped" in self.meta:
            raise FileNotFoundError(f"{self.folder} holds no experts ({self.meta['skipped']}): run `dvc repro` with this method")
        self.spec = NetSpec(**self.meta["spec"])
        self.num_experts = int(self.meta["num_experts"])
        self.epochs = int(self.meta["epochs"])
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_size = cache

    def trajectory(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = artifacts.load(expert_path(self.folder, index), mmap=True)["trajectory"]
        return self._cache[index]
