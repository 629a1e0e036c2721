"""Where the bytes part between CPU kernel paths, and what pinning one path costs.

    python benchmarks/kernel_paths.py                      # every path below, side by side in one run
    python benchmarks/kernel_paths.py --paths default,aten-default --steps 20

torch picks its CPU kernels at run time from what the processor offers: ATen's vectorised kernels
(``ATEN_CPU_CAPABILITY``: default, avx2, avx512), oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and
MKL's GEMM (``MKL_CBWR``). Two machines that pick differently round differently, and a training run
amplifies the first differing bit. Each path below runs in its own one-thread process (as the stages'
workers do) on the default's shape (ConvNet width 32, depth 3, instance norm, 1x28x28, batch 256): a
forward pass recorded layer by layer, the loss, every parameter's gradient, a few SGD steps, and the
time of one training step. The parent compares every recorded tensor with the first path's and names
the first op, in the order the net computes it, whose output bytes differ. One JSON line per path goes
to ``--out``, with the platform (trustdd.platform) it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trustdd.nn.networks import NetSpec  # noqa: E402
from trustdd.platform import current  # noqa: E402

# name -> environment; "pinned-*" pin all three libraries at once
PATHS = {
    "default": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "mkl-avx2": {"MKL_CBWR": "AVX2,STRICT"},
    "pinned-avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"},
    "pinned-baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
}
SPEC = NetSpec("convnet", channels=1, image_size=28, num_classes=10, width=32, depth=3, norm="instance")


def probe(out: Path, steps: int, timed: int) -> None:
    """In a child process: record every layer's output, the loss, the gradients, ``steps`` SGD steps, and
    the median seconds of ``timed`` more training steps."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SPEC.build()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (256,), generator=gen)
    record: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: record.__setitem__(f"forward {name} ({type(m).__name__})", o.detach().clone()))
        for name, module in net.named_modules()
        if not list(module.children())
    ]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    for h in hooks:
        h.remove()
    record["loss (cross_entropy)"] = loss.detach().clone()
    loss.backward()
    for name, param in reversed(list(net.named_parameters())):  # the order backward computes them
        record[f"grad {name}"] = param.grad.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(steps):
        step()
    for name, param in net.named_parameters():
        record[f"after {steps} steps {name}"] = param.detach().clone()
    seconds = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    torch.save({"record": record, "seconds": seconds, "platform": current().to_dict()}, out)


def first_difference(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict | None:
    for name, a in ref.items():
        b = other[name]
        if a.shape != b.shape or not torch.equal(a, b):
            diff = (a - b).abs()
            return {"op": name, "max_abs_diff": float(diff.max()), "max_rel_diff": float((diff / a.abs().clamp_min(1e-12)).max()),
                    "differing_elements": int((diff > 0).sum()), "elements": a.numel()}
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from: {', '.join(PATHS)}")
    ap.add_argument("--steps", type=int, default=10, help="SGD steps before the parameters are compared")
    ap.add_argument("--timed", type=int, default=30, help="training steps timed after them (median reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/kernel_paths.jsonl")
    ap.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # the child's entry point
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe, args.steps, args.timed)
    names = args.paths.split(",")
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise SystemExit(f"--paths: unknown value(s) {', '.join(unknown)}; valid choices: {', '.join(PATHS)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            env = {k: v for k, v in os.environ.items() if k not in {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"}}
            env.update(PATHS[name])
            path = Path(tmp) / f"{name}.pt"
            subprocess.run([sys.executable, __file__, "--probe", str(path), "--steps", str(args.steps),
                            "--timed", str(args.timed)], env=env, check=True)
            results[name] = torch.load(path, weights_only=False)
    ref_name = names[0]
    ref = results[ref_name]
    base_s = statistics.median(ref["seconds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'path':<17}{'ms/step':>9}{'vs ' + ref_name:>14}  first op whose output differs from {ref_name}'s")
    with args.out.open("a") as f:
        for name in names:
            r = results[name]
            s = statistics.median(r["seconds"])
            diff = first_difference(ref["record"], r["record"])
            line = {"benchmark": "kernel_paths", "path": name, "env": PATHS[name], "reference": ref_name,
                    "step_ms": round(1000 * s, 2), "time_ratio": round(s / base_s, 3), "first_difference": diff,
                    "identical": diff is None, "steps": args.steps, "platform": r["platform"]}
            f.write(json.dumps(line) + "\n")
            where = "identical (every layer, gradient and parameter)" if diff is None else (
                f"{diff['op']}: {diff['differing_elements']}/{diff['elements']} elements, max abs diff {diff['max_abs_diff']:.3g}")
            print(f"{name:<17}{1000 * s:>9.2f}{s / base_s:>13.3f}x  {where}")


if __name__ == "__main__":
    main()
