"""What each lever does to one training step and one scoring pass, side by side in one run.

    python benchmarks/step_levers.py                        # every lever, default and CIFAR shapes
    python benchmarks/step_levers.py --levers fp32,bf16 --shapes default --timed 20

A training step here is the pipeline's (trustdd.nn.training): DSA on the InD half and on the outlier
half, both through the net as one batch, cross-entropy plus Outlier Exposure, SGD with momentum and
weight decay. A scoring pass is ODIN's on 500 images (forward, gradient with respect to the input,
forward again: the costliest score), with the plain forward that every other score shares.

Levers: ``fp32`` (today's eager path), ``channels_last`` (net and inputs in NHWC), ``bf16`` (autocast to
bfloat16, weights kept in fp32), ``compile`` (``torch.compile`` of the net; its compile time is reported
apart), ``all`` (the three together). Each lever runs in its own one-thread process, as the stages'
workers do, and is timed over the same inputs; the median of ``--timed`` steps after ``--warmup`` is
reported. The loss after ``--steps`` steps from the same start shows how far a lever moves the numbers
(one line per lever and shape to ``--out``, with the platform it ran on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trustdd.nn.augment import DSA  # noqa: E402
from trustdd.nn.losses import trustdd_loss  # noqa: E402
from trustdd.nn.networks import NetSpec  # noqa: E402
from trustdd.platform import current  # noqa: E402

LEVERS = {
    "fp32": set(),
    "channels_last": {"channels_last"},
    "bf16": {"bf16"},
    "compile": {"compile"},
    "all": {"channels_last", "bf16", "compile"},
}
SHAPES = {  # the default's ConvNet and the CIFAR presets' (128 InD + 128 outliers per step, as at ipc 10)
    "default": NetSpec("convnet", channels=1, image_size=28, num_classes=10, width=32, depth=3, norm="instance"),
    "cifar": NetSpec("convnet", channels=3, image_size=32, num_classes=10, width=128, depth=3, norm="instance"),
}


def probe(out: Path, lever: str, shape: str, steps: int, warmup: int, timed: int, device: str) -> None:
    """In a child process: train from one fixed start with ``lever`` and time its steps and scoring."""
    levers = LEVERS[lever]
    if device == "cpu":
        torch.set_num_threads(1)
    dev = torch.device(device)
    spec = SHAPES[shape]
    torch.manual_seed(0)
    net = spec.build().to(dev)
    fmt = torch.channels_last if "channels_last" in levers else torch.contiguous_format
    net = net.to(memory_format=fmt)
    model = torch.compile(net) if "compile" in levers else net
    cast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if "bf16" in levers else contextlib.nullcontext
    gen = torch.Generator().manual_seed(1)
    size = spec.image_size
    x_in = torch.rand(128, spec.channels, size, size, generator=gen).to(dev)
    y_in = torch.randint(0, 10, (128,), generator=gen).to(dev)
    x_out = torch.rand(128, spec.channels, size, size, generator=gen).to(dev)
    x_score = torch.rand(500, spec.channels, size, size, generator=gen).to(dev).contiguous(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    augment = DSA()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(i: int) -> float:
        xb = torch.cat([augment(x_in, 2 * i), augment(x_out, 2 * i + 1)]).contiguous(memory_format=fmt)
        with cast():
            logits_in, logits_out = model(xb).float().split([128, 128])
            loss = trustdd_loss(logits_in, y_in, logits_out, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def score() -> None:
        with torch.enable_grad():
            x = x_score.clone().requires_grad_(True)
            with cast():
                logits = model(x).float() / 1000.0
            loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad(), cast():
            model(x.detach() - 0.0014 * grad.sign()).float().softmax(1)
            model(x_score).float()  # the shared forward of msp, energy, knn, ...

    began = time.perf_counter()
    step(0)
    sync()
    first_step_s = time.perf_counter() - began
    losses = [step(i) for i in range(1, steps)]
    for i in range(warmup):
        step(steps + i)
    seconds = []
    for i in range(timed):
        began = time.perf_counter()
        step(steps + warmup + i)
        sync()
        seconds.append(time.perf_counter() - began)
    net.eval()
    began = time.perf_counter()
    score()
    sync()
    first_score_s = time.perf_counter() - began
    score_seconds = []
    for _ in range(max(3, timed // 5)):
        began = time.perf_counter()
        score()
        sync()
        score_seconds.append(time.perf_counter() - began)
    result = {"step_ms": 1000 * statistics.median(seconds), "score_ms": 1000 * statistics.median(score_seconds),
              "first_step_s": first_step_s, "first_score_s": first_score_s, "losses": losses,
              "platform": current().to_dict()}
    out.write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from: {', '.join(LEVERS)}")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from: {', '.join(SHAPES)}")
    ap.add_argument("--steps", type=int, default=20, help="steps from the fixed start whose losses are compared")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after them")
    ap.add_argument("--timed", type=int, default=20, help="timed training steps (median reported)")
    ap.add_argument("--device", default="cpu", help="cpu (one thread per process, as the stages' workers) or cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_levers.jsonl")
    ap.add_argument("--probe", nargs=2, metavar=("LEVER", "SHAPE"), help=argparse.SUPPRESS)
    ap.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe_out, *args.probe, args.steps, args.warmup, args.timed, args.device)
    for key, given, valid in (("--levers", args.levers, LEVERS), ("--shapes", args.shapes, SHAPES)):
        unknown = [n for n in given.split(",") if n not in valid]
        if unknown:
            raise SystemExit(f"{key}: unknown value(s) {', '.join(unknown)}; valid choices: {', '.join(valid)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device: {args.device!r}, but torch sees no CUDA device here")
    levers, shapes = args.levers.split(","), args.shapes.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'shape':<9}{'lever':<15}{'ms/step':>9}{'x fp32':>8}{'ms/score':>10}{'x fp32':>8}{'1st step s':>11}"
          f"  loss after {args.steps} steps (fp32's)")
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as f:
        for shape in shapes:
            ref = None
            for lever in levers:
                path = Path(tmp) / f"{shape}-{lever}.json"
                subprocess.run([sys.executable, __file__, "--probe", lever, shape, "--probe-out", str(path),
                                "--steps", str(args.steps), "--warmup", str(args.warmup), "--timed", str(args.timed),
                                "--device", args.device], check=True)
                r = json.loads(path.read_text())
                ref = ref or r
                line = {"benchmark": "step_levers", "shape": shape, "lever": lever, "device": args.device,
                        "step_ms": round(r["step_ms"], 2), "step_ratio": round(r["step_ms"] / ref["step_ms"], 3),
                        "score_ms": round(r["score_ms"], 2), "score_ratio": round(r["score_ms"] / ref["score_ms"], 3),
                        "first_step_s": round(r["first_step_s"], 2), "first_score_s": round(r["first_score_s"], 2),
                        "final_loss": round(r["losses"][-1], 5), "fp32_final_loss": round(ref["losses"][-1], 5),
                        "steps": args.steps, "timed": args.timed, "platform": r["platform"]}
                f.write(json.dumps(line) + "\n")
                print(f"{shape:<9}{lever:<15}{line['step_ms']:>9.1f}{line['step_ratio']:>8.2f}{line['score_ms']:>10.1f}"
                      f"{line['score_ratio']:>8.2f}{line['first_step_s']:>11.1f}  {line['final_loss']:.5f} "
                      f"({line['fp32_final_loss']:.5f})")


if __name__ == "__main__":
    main()
