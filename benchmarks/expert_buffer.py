"""Size on disk and memory of a paper-scale expert buffer, read the way distillation reads it.

    python benchmarks/expert_buffer.py [--experts 8] [--dataset cifar10] [--depth 3] [--dir /tmp/buffer]

Writes ``--experts`` trajectories of MTT's shape (width-128 ConvNet, 50 epochs + the initialisation,
float32) in the project's format with ``trustdd.experts``' own file names, then, each in a fresh process,
reads 200 random (expert, start epoch) pairs as MTT does (two snapshots per iteration):

- ``mmap``: through :class:`trustdd.experts.ExpertBuffer` (files memory-mapped, only indexed rows read);
- ``eager``: ``torch.load`` of every whole trajectory that is used (what a plain loader would do).

Reports bytes per expert, the extrapolation to MTT's 100 experts, and per reader the time, the largest
growth of anonymous memory (heap) during the reads, the file-backed pages resident (clean page cache the
kernel can drop) and the peak RSS. The trajectories are random numbers: size and memory do not depend on
the values, and training 100 real experts would take days on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from trustdd import artifacts
from trustdd.data.datasets import DATASETS
from trustdd.experts import ExpertBuffer, expert_path, human_bytes
from trustdd.nn.networks import NetSpec

EPOCHS = 50
READS = 200


def write_buffer(folder: Path, spec: NetSpec, experts: int) -> int:
    num_params = sum(p.numel() for p in spec.build().parameters())
    g = torch.Generator().manual_seed(0)
    for i in range(experts):
        artifacts.save({"trajectory": torch.randn(EPOCHS + 1, num_params, generator=g)}, expert_path(folder, i))
    meta = {"spec": asdict(spec), "num_experts": experts, "epochs": EPOCHS, "num_params": num_params}
    (folder / "meta.json").write_text(json.dumps(meta))
    return num_params


def memory() -> dict[str, int]:
    """Resident anonymous memory (heap: what a process really holds) and resident file-backed pages (page
    cache mapped into the process: clean, dropped by the kernel under pressure), in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile")}


def read(folder: Path, mode: str) -> None:
    """Child process: READS random (expert, start) pairs; prints JSON with memory peaks and seconds."""
    g = torch.Generator().manual_seed(1)
    buffer = ExpertBuffer(folder)
    base = memory()
    peak = dict(base)
    start_time, total = time.time(), 0.0
    for _ in range(READS):
        e = int(torch.randint(buffer.num_experts, (1,), generator=g))
        t = int(torch.randint(EPOCHS - 2, (1,), generator=g))
        traj = (
            buffer.trajectory(e)
            if mode == "mmap"
            else torch.load(expert_path(folder, e), weights_only=True)["trajectory"]
        )
        total += float(traj[t].sum() + traj[t + 2].sum())  # touch the two snapshots an iteration uses
        peak = {k: max(v, memory()[k]) for k, v in peak.items()}
    print(
        json.dumps(
            {
                "seconds": time.time() - start_time,
                "anon_growth": peak["RssAnon"] - base["RssAnon"],
                "file_resident": peak["RssFile"] - base["RssFile"],
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "checksum": total,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        read(Path(args.child[0]), args.child[1])
        return
    info = DATASETS.get(args.dataset)
    spec = NetSpec("convnet", info.channels, info.image_size, info.num_classes, width=128, depth=args.depth)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="expert-buffer-"))
    folder.mkdir(parents=True, exist_ok=True)
    num_params = write_buffer(folder, spec, args.experts)
    per_expert = expert_path(folder, 0).stat().st_size
    print(
        f"{args.dataset} ConvNet-{args.depth} width 128: {num_params:,} parameters; {EPOCHS + 1} snapshots per expert"
    )
    print(
        f"  one expert file: {human_bytes(per_expert)}; "
        f"{args.experts} experts: {human_bytes(per_expert * args.experts)}; "
        f"MTT's 100 experts: {human_bytes(per_expert * 100)}"
    )
    for mode in ("mmap", "eager"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), mode], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout)
        print(
            f"  {mode:5s}: {READS} iterations' snapshot pairs in {r['seconds']:.2f} s; heap grew by at most "
            f"{human_bytes(r['anon_growth'])}, file pages resident {human_bytes(r['file_resident'])} "
            f"(peak RSS {human_bytes(r['peak_rss'])}, torch's import included)"
        )


if __name__ == "__main__":
    main()
