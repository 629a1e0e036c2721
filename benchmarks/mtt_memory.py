"""Peak memory and seconds per iteration of trajectory matching, unrolled (MTT) vs constant memory (TESLA).

    python benchmarks/mtt_memory.py                                 # both shapes, syn_steps 10 20 40 80
    python benchmarks/mtt_memory.py --shapes default --steps 10 20 --device cuda

Prints one JSON line per (shape, memory mode, syn_steps). Each measurement runs in a fresh process on
synthetic images and random expert trajectories (no data needed), so the peak is that configuration's
alone: on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the process's peak resident set
(``ru_maxrss``, which includes the ~0.4 GB of the torch runtime itself). Shapes:

- ``default``: the CPU default (Fashion-MNIST 1x28x28, ConvNet width 32, ipc 10, 50 InD + 50 outlier
  images per student step);
- ``cifar10``: the cifar10-ipc10 preset's shape (3x32x32, width 128, ipc 10, all 100 InD + 100 outlier
  images per student step).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SHAPES = {
    "default": {"channels": 1, "size": 28, "width": 32, "batch_syn": 50},
    "cifar10": {"channels": 3, "size": 32, "width": 128, "batch_syn": 0},
}


def measure(shape: str, memory: str, syn_steps: int, iterations: int, device: str, chunk: int) -> dict:
    import torch

    from trustdd.distill.methods import DistillTask, TrajectoryMatching
    from trustdd.nn.networks import NetSpec, flat_params, init_network

    s = SHAPES[shape]
    dev = torch.device(device)
    spec = NetSpec("convnet", channels=s["channels"], image_size=s["size"], num_classes=10, width=s["width"], depth=3)
    g = torch.Generator().manual_seed(0)
    theta = flat_params(init_network(spec, seed=0))

    class Experts:  # two random walks in parameter space stand in for trained experts
        num_experts, epochs = 2, 3
        trajectories = [theta + 0.01 * torch.randn(4, theta.numel(), generator=g).cumsum(0) for _ in range(2)]

        def trajectory(self, i):
            return self.trajectories[i]

    ipc, shape_ = 10, (s["channels"], s["size"], s["size"])
    task = DistillTask(
        real_x=torch.randn(10 * 50, *shape_, generator=g),
        real_y=torch.arange(10).repeat_interleave(50),
        pool_x=torch.randn(400, *shape_, generator=g),
        pool_kind=torch.arange(400) % 4,
        num_kinds=4, num_classes=10, ipc=ipc, spec=spec, lambda_oe=0.5, seed=0, device=dev, experts=Experts(),
    )
    method = TrajectoryMatching(
        iterations=iterations, syn_steps=syn_steps, expert_epochs=1, max_start_epoch=2, lr_img=100,
        lr_lr=1e-5, lr_init=0.01, batch_syn=s["batch_syn"], init="random", memory=memory, chunk=chunk,
        log_every=iterations,
    )
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.time()
    method.run(task)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = (time.time() - t0) / iterations
    if dev.type == "cuda":
        peak, what = torch.cuda.max_memory_allocated(dev), "cuda.max_memory_allocated"
    else:
        peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    return {
        "shape": shape, "memory": memory, "chunk": chunk, "syn_steps": syn_steps, "device": device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "seconds_per_iteration": round(seconds, 3),
        "peak_mb": round(peak / 2**20, 1), "peak_is": what,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--steps", nargs="+", type=int, default=[10, 20, 40, 80])
    ap.add_argument("--modes", nargs="+", default=["unrolled", "constant"], choices=["unrolled", "constant"])
    ap.add_argument("--chunk", type=int, default=0, help="constant memory: images per recomputed forward")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure in this process
    args = ap.parse_args(argv)
    if args.one:
        line = measure(args.shapes[0], args.modes[0], args.steps[0], args.iterations, args.device, args.chunk)
        print(json.dumps(line), flush=True)
        return 0
    for shape in args.shapes:
        for steps in args.steps:
            for mode in args.modes:
                cmd = [
                    sys.executable, __file__, "--one", "--shapes", shape, "--modes", mode, "--steps", str(steps),
                    "--iterations", str(args.iterations), "--device", args.device,
                    "--chunk", str(args.chunk if mode == "constant" else 0),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(json.dumps({"shape": shape, "memory": mode, "syn_steps": steps, "error": done.stderr.strip()[-400:]}), flush=True)
                else:
                    print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
