"""Seeding, device choice and crash-safe output writing."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:<index>", "mps")


def configure_determinism(seed: int) -> None:
    """Seed torch's global RNG once and ask for deterministic kernels (same seed, same machine, same bytes)."""
    torch.manual_seed(seed)
    # ATen's flag alone: torch.use_deterministic_algorithms also sets torch._inductor.config.deterministic,
    # and importing that config takes about 2 s per process (it pulls in torch._dynamo) for a compiler
    # nothing here uses. Where a torch lacks the private setter, the public call does the same and more.
    set_aten_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_aten_flag is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        set_aten_flag(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def generator(seed: int, *stream: str | int) -> torch.Generator:
    """A CPU generator for one named purpose, derived from the run seed.

    Stages and components draw from their own stream (``generator(seed, "experts", 3)``), so adding
    randomness in one place never shifts the numbers drawn in another.
    """
    key = ":".join(str(s) for s in (seed, *stream)).encode()
    return torch.Generator().manual_seed(zlib.crc32(key) ^ (seed & 0xFFFFFFFF))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Raises a clear error for unknown or unavailable devices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device: 'mps' requested but this machine has no MPS backend; use 'auto' or 'cpu'")
        return torch.device("mps")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    raise ValueError(f"device: unknown value {name!r}; valid choices: {', '.join(DEVICES)}")


def tmp_sibling(path: Path) -> Path:
    """This process's scratch name for ``path`` (``.NAME.tmp-PID``), after removing the ones that
    killed runs left behind: an expert buffer's can be gigabytes."""
    remove_stale_tmp(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` siblings of ``path`` whose process no longer runs (a stage killed by
    SIGKILL or the OOM killer cannot clean up after itself); a live process's scratch is left alone.
    Returns what was removed."""
    path = Path(path)
    removed = []
    for tmp in sorted(path.parent.glob(f".{path.name}.tmp-*")) if path.parent.is_dir() else []:
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(missing_ok=True)
        print(f"removed {tmp}, left by a run that was killed (process {pid})", file=sys.stderr)
        removed.append(tmp)
    return removed


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces ``path`` only if the block finishes without error.

    A stage killed half-way leaves at most a hidden ``.NAME.tmp-PID`` folder, never a half-written output.
    """
    path = Path(path)
    tmp = tmp_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    write_all({path: text})


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def write_all(files: dict[str | Path, str]) -> None:
    """Write several text files as one result: every file goes to a scratch name first, and only when all
    are on disk are they renamed over the old ones. An error or a kill before that leaves every old file
    as it was (the renames themselves take microseconds)."""
    staged = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_sibling(path)
            staged.append((tmp, path))
            tmp.write_text(text)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
