"""A stage on more than one process: ``torch.distributed``, launched by torchrun.

``parallel.nproc: 1`` (the default) is one plain process: :data:`SINGLE`, a group of one whose
collectives do nothing. With ``nproc: N`` a stage re-runs its own script under torchrun's launcher
(:func:`launch`, one machine, N processes); on many machines the user starts the same script with
``torchrun --nnodes ... --rdzv-endpoint ...`` and every process joins the group (:func:`join`).

What a stage divides over the ranks:

- ``train_experts``: expert i is trained and written by rank ``i mod N`` (:meth:`Group.shard`);
  rank 0 writes ``meta.json`` once every rank's files are on disk.
- ``distill`` (trajectory matching): the ``distill.mtt.trajectories`` matched per iteration are divided
  over the ranks and their gradients averaged (:meth:`Group.average_grads`).
- ``evaluate``: the nets are divided over the ranks and their results gathered on rank 0.

Rank 0 writes every output, into the one scratch folder of :meth:`Group.atomic_dir` that all ranks
share, renamed into place only when every rank has finished. A rank that fails makes torchrun stop
the others; :func:`launch` then raises :class:`RankFailedError` naming the rank and removes the
scratch folders, so the last complete output stays and the next run starts clean.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import torch

from trustdd.runtime import atomic_dir, remove_stale_tmp, resolve_device

BACKENDS = ("auto", "gloo", "nccl")
T = TypeVar("T")


# The exit code of a rank that stopped because another rank failed (its collective lost the peer), so
# that the launcher reports the rank that failed first rather than the ones it took down with it.
PEER_LOST_EXIT = 75
# How long such a rank waits before it exits: the failed rank may still be shutting down (a sys.exit runs
# Python's finalisation, slow on a busy machine), and a rank that exits first is the failure the launcher
# records, and the one whose exit makes it stop the others. Only a failing run pays it.
PEER_LOST_GRACE_S = 5.0


class RankFailedError(RuntimeError):
    """A process of a multi-process stage failed; the message names it and how it ended."""


class ParallelSetupError(ValueError):
    """The processes torchrun started cannot run this stage as asked (e.g. more NCCL ranks than GPUs)."""


class PeerLostError(RuntimeError):
    """A collective failed: another rank of the group died or stopped answering."""


@contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as err:  # gloo: "Connection closed by peer"; nccl: DistBackendError
        raise PeerLostError(f"{what}: {str(err).splitlines()[0]}") from err


@dataclass(frozen=True)
class ParallelConfig:
    nproc: int = 1  # processes a stage runs on (1: one plain process, no torch.distributed)
    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    # How long a rank waits for the others at a collective. Ranks that finish their share early wait for
    # the slowest (one more expert, a full-data net); a rank that dies is caught by torchrun at once, so
    # this only ends a rank that hangs.
    timeout_minutes: int = 1440

    def check(self, device: str = "auto") -> None:
        """Raise ValueError naming the ``parallel`` key, its value and what is valid."""
        if self.nproc < 1:
            raise ValueError(f"parallel.nproc: invalid value {self.nproc!r}; expected an integer >= 1 (1: one process)")
        if self.nproc > 1 and device == "mps":
            raise ValueError(f"parallel.nproc: invalid value {self.nproc}; expected 1 with device 'mps' (no "
                             "torch.distributed backend takes MPS tensors)")
        if self.timeout_minutes < 1:
            raise ValueError(f"parallel.timeout_minutes: invalid value {self.timeout_minutes!r}; expected an integer >= 1")
        if self.backend not in BACKENDS:
            choices = ", ".join(BACKENDS)
            raise ValueError(f"parallel.backend: unknown value {self.backend!r}; valid choices: {choices}")
        no_cuda = device in ("cpu", "mps") or (device == "auto" and not torch.cuda.is_available())
        if self.backend == "nccl" and no_cuda:
            raise ValueError(
                f"parallel.backend: 'nccl' needs CUDA devices, but device is {device!r} on this machine; use auto or gloo"
            )


class Group:
    """The processes one stage runs on. A group of one (:data:`SINGLE`) needs no torch.distributed:
    every collective returns at once, so single-process code paths are unchanged."""

    def __init__(self, rank: int = 0, world: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.world = rank, world
        self.device = device  # where the collectives' tensors live (CUDA under nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, world={self.world})"

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: item i goes to rank ``i mod world``."""
        return list(items[self.rank :: self.world])

    def gather_shards(self, results: Sequence[T]) -> list[T] | None:
        """On rank 0, every rank's ``results`` for its :meth:`shard`, put back in the order of the items
        they were sharded from; None on the others."""
        gathered = self.gather(list(results))
        if gathered is None:
            return None
        return [gathered[i % self.world][i // self.world] for i in range(sum(map(len, gathered)))]

    def barrier(self) -> None:
        if self.world > 1:
            with _collective("barrier"):
                torch.distributed.barrier()

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.is_main else None
        with _collective("gather"):
            torch.distributed.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if self.world == 1:
            return obj
        box = [obj]
        with _collective("broadcast"):
            torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors(self, *tensors: torch.Tensor | None) -> None:
        """Overwrite each tensor, in place, with rank 0's (the same shapes on every rank)."""
        if self.world > 1:
            for t in tensors:
                if t is not None:
                    with _collective("broadcast"):
                        torch.distributed.broadcast(t.data, src=0)

    def sum(self, value: float) -> float:
        """The sum of ``value`` over the ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        with _collective("all-reduce"):
            torch.distributed.all_reduce(t)
        return float(t)

    def average_grads(self, tensors: Sequence[torch.Tensor], count: int) -> None:
        """Replace each tensor's ``.grad`` by the sum over the ranks divided by ``count`` (the number of
        terms summed over all ranks). One all-reduce of the grads packed flat. A tensor without a grad
        counts as zeros. With one rank and ``count`` 1 nothing changes."""
        if self.world == 1 and count == 1:
            return
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
        flat = torch.cat([g.reshape(-1) for g in grads])
        if self.world > 1:
            with _collective("all-reduce"):
                torch.distributed.all_reduce(flat)
        flat /= count
        for t, part in zip(tensors, flat.split([g.numel() for g in grads])):
            t.grad = part.view_as(t).clone()

    @contextmanager
    def atomic_dir(self, path: str | Path) -> Iterator[Path]:
        """:func:`trustdd.runtime.atomic_dir` shared by the ranks: rank 0 makes the scratch folder, every
        rank writes into it, and rank 0 renames it over ``path`` once every rank has left the block.
        The folder must be on a filesystem every rank sees (one machine, or a shared project folder)."""
        if self.world == 1:
            with atomic_dir(path) as tmp:
                yield tmp
            return
        if not self.is_main:
            tmp = Path(self.broadcast(None))
            yield tmp
            self.barrier()
            return
        with atomic_dir(path) as tmp:
            self.broadcast(str(tmp))
            yield tmp
            self.barrier()


SINGLE = Group()


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or :func:`launch`) started as one rank of a group."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _rank_device(name: str, backend: str) -> torch.device:
    """``auto``/``cuda`` give each rank of a machine its own GPU, by local rank; NCCL needs exactly that."""
    device = resolve_device(name)
    if device.type != "cuda":
        return device
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count()
    nccl = backend in ("auto", "nccl")
    if nccl and (device.index is not None and local_world > 1 or local_world > gpus):
        raise ParallelSetupError(
            f"params: parallel.backend: nccl needs one GPU per process, but this machine runs {local_world} "
            f"processes on {1 if device.index is not None else gpus} GPU(s) (device {name!r}); start at most {gpus} "
            "processes per machine with device auto, or set parallel.backend: gloo"
        )
    device = torch.device("cuda", local_rank) if device.index is None else device
    torch.cuda.set_device(device)
    return device


def _die_with_parent() -> None:
    """Linux: end this rank when the process that launched it dies, even by SIGKILL (a rank left running
    could later rename its scratch folder over a newer output)."""
    if sys.platform != "linux":
        return
    import ctypes

    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def join(cfg: ParallelConfig, device: str) -> Iterator[tuple[Group, torch.device]]:
    """The group this process belongs to and its device. Outside torchrun: :data:`SINGLE` and
    ``device`` resolved as ever. Under torchrun: joins the process group (``cfg.backend``; ``auto`` is
    nccl on CUDA, gloo otherwise) for the block and leaves it afterwards. The group is as large as
    torchrun made it (``WORLD_SIZE``, over all machines); ``cfg.nproc`` only says how many processes
    :func:`relaunch` starts on one machine."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        yield SINGLE, resolve_device(device)
        return
    _die_with_parent()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dev = _rank_device(device, cfg.backend)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
    torch.distributed.init_process_group(backend, timeout=timedelta(minutes=cfg.timeout_minutes))
    try:
        yield Group(rank, world, dev), dev
    except PeerLostError as err:
        print(f"rank {rank}: stopped at a failed collective ({err}); {err.__cause__}", file=sys.stderr, flush=True)
        time.sleep(PEER_LOST_GRACE_S)  # the launcher sees the failed rank's own exit first, and stops this one
        sys.exit(PEER_LOST_EXIT)
    finally:
        torch.distributed.destroy_process_group()


def relaunch(nproc: int, outputs: Sequence[str | Path] = ()) -> bool:
    """With ``nproc`` > 1 in a process torchrun did not start: run this script on ``nproc`` processes
    (:func:`launch`) and return True once they have all finished; otherwise False (run here)."""
    if nproc <= 1 or launched_by_torchrun():
        return False
    launch(nproc, outputs)
    return True


def this_command() -> list[str]:
    """This process's command line as the interpreter takes it: ``-m stages.<name>`` when run as a module
    (as dvc.yaml runs the stages: the working directory, and so its ``trustdd``, comes first on the import
    path of every rank too), else the script and its arguments."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name:
        return ["-m", spec.name, *sys.argv[1:]]
    return list(sys.argv)


def launch(nproc: int, outputs: Sequence[str | Path] = (), argv: Sequence[str] | None = None) -> None:
    """Run this stage (``argv``, default :func:`this_command`) again under torchrun's launcher: ``nproc`` processes
    on this machine, a free local port for the rendezvous, no restarts. Each process runs one thread
    unless OMP_NUM_THREADS says otherwise (as torchrun does). When a process fails the others are
    stopped, the scratch folders of ``outputs`` are removed (the last complete outputs stay), and
    :class:`RankFailedError` names the failed rank."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    argv = this_command() if argv is None else list(argv)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"trustdd-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    print(f"parallel: {' '.join(argv)} on {nproc} processes (torch.distributed, {threads} thread(s) each)",
          file=sys.stderr, flush=True)
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads  # the ranks inherit this process's environment
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as err:
        for out in outputs:
            remove_stale_tmp(out)
        raise RankFailedError(_describe(err, nproc)) from None
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]


def _describe(err, nproc: int) -> str:
    """Which rank failed and how, from torchrun's report: the first that did not stop for another's failure."""
    stopped = (PEER_LOST_EXIT, -signal.SIGTERM)  # stopped by another's failure, or by torchrun after it
    causes = {r: f for r, f in err.failures.items() if f.exitcode not in stopped}
    if not causes:
        ranks = ", ".join(map(str, sorted(err.failures)))
        return (
            f"parallel: rank(s) {ranks} of {nproc} stopped at a failed collective, none failing before it (their "
            "errors are printed above); no output was written. Fix it, or run with parallel.nproc: 1"
        )
    rank = min(causes, key=lambda r: (causes[r].timestamp, r))
    failure = causes[rank]
    how = f"exit code {failure.exitcode}"
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        how = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    others = sorted(r for r in causes if r != rank)
    also = f"; rank(s) {', '.join(map(str, others))} failed too" if others else ""
    return (
        f"parallel: rank {rank} of {nproc} failed ({how}){also}; the other ranks were stopped and no output was "
        "written (its error is printed above). Fix it, or run with parallel.nproc: 1"
    )
