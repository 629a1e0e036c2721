"""The platform a run computed on: what decides whether two runs can agree byte for byte.

Same seed, same params and the same platform give the same bytes. A different platform (another torch, or
a CPU whose vector units make torch, oneDNN or MKL choose other kernels) rounds differently, and training
amplifies the first differing bit: the results then agree only within their noise
(:mod:`trustdd.experiments.repro` checks which of the two applies). ``evaluate`` records the platform it ran
on in ``metrics/platform.json`` beside the results.
"""

from __future__ import annotations

import os
import platform as _system
import re
from dataclasses import asdict, dataclass, fields
from importlib import metadata

import torch

PATH = "metrics/platform.json"
# the switches that pin a kernel path (benchmarks/kernel_paths.py measures them); recorded when set
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE")
# the CPU features that the libraries' kernel dispatch looks at
SIMD_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "asimd", "sve", "sve2")


@dataclass(frozen=True)
class Platform:
    """Every field can change a float result; two records that are equal promise the same bytes."""

    machine: str  # x86_64, aarch64, arm64
    cpu: str  # vendor, model name, family/model/stepping where the OS says
    cpu_flags: tuple[str, ...]  # the SIMD features of SIMD_FLAGS the CPU has
    cpu_capability: str  # the vector kernels ATen dispatches to (torch.backends.cpu.get_cpu_capability())
    blas: str  # the BLAS torch was built with, and its version
    onednn: str  # oneDNN's version ("" where torch has none)
    kernel_env: tuple[tuple[str, str], ...]  # the KERNEL_ENV switches that are set
    threads: int  # torch's intra-op threads in the process that recorded it (one per job when workers > 0)
    device: str  # cpu, or the GPU's name
    python: str
    torch: str
    torchvision: str
    numpy: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cpu_flags"] = list(self.cpu_flags)
        d["kernel_env"] = dict(self.kernel_env)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Platform":
        names = {f.name for f in fields(cls)}
        missing, unknown = names - set(d), set(d) - names
        if missing or unknown:
            raise ValueError(f"platform record: missing field(s) {sorted(missing)}, unknown field(s) {sorted(unknown)}")
        return cls(**{**d, "cpu_flags": tuple(d["cpu_flags"]), "kernel_env": tuple(sorted(d["kernel_env"].items()))})

    def summary(self) -> str:
        """One line for a results table: where its figures were measured."""
        pins = ", ".join(f"{k}={v}" for k, v in self.kernel_env)
        return (f"{self.cpu}, {self.machine}, ATen {self.cpu_capability}, {self.blas}, oneDNN {self.onednn or 'none'}, "
                f"{self.threads} threads{f', {pins}' if pins else ''}, device {self.device}; torch {self.torch}, "
                f"torchvision {self.torchvision}")

    def differences(self, other: "Platform") -> dict[str, tuple]:
        """``{field: (mine, other's)}`` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines()) if k.strip()}


def _cpu() -> tuple[str, tuple[str, ...]]:
    info = _cpuinfo()
    if not info:
        return _system.processor() or _system.machine(), ()
    name = info.get("model name") or info.get("Model") or info.get("CPU implementer", "")
    ids = "/".join(info[k] for k in ("cpu family", "model", "stepping") if k in info)  # x86
    ids = ids or "/".join(info[k] for k in ("CPU implementer", "CPU part", "CPU variant") if k in info)  # arm
    vendor = info.get("vendor_id", "")
    present = set((info.get("flags") or info.get("Features") or "").split())
    return " ".join(s for s in (vendor, name, f"({ids})" if ids else "") if s), tuple(f for f in SIMD_FLAGS if f in present)


def _built_with(pattern: str) -> str:
    match = re.search(pattern, torch.__config__.show())
    return match.group(1).strip() if match else ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def current(device: torch.device | str = "cpu") -> Platform:
    """This process's platform, for work done on ``device``."""
    device = torch.device(device)
    cpu, flags = _cpu()
    blas = _built_with(r"BLAS_INFO=(\w+)")
    blas_version = _built_with(r"Math Kernel Library Version ([\w.\-]+)") if blas == "mkl" else ""
    return Platform(
        machine=_system.machine(),
        cpu=cpu,
        cpu_flags=flags,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        blas=" ".join(s for s in (blas, blas_version) if s),
        onednn=_built_with(r"MKL-DNN (v[\w.]+)"),
        kernel_env=tuple(sorted((k, os.environ[k]) for k in KERNEL_ENV if k in os.environ)),
        threads=torch.get_num_threads(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        python=_system.python_version(),
        torch=torch.__version__,
        torchvision=_version("torchvision"),
        numpy=_version("numpy"),
    )
