"""Stage 3: expert trajectories (networks trained on real InD + outliers, snapshotted every epoch)."""

from pathlib import Path

from trustdd import artifacts
from trustdd.cli import run_stage
from trustdd.data import Prepared
from trustdd.experts import train_experts
from trustdd.params import load_params
from trustdd.runtime import atomic_dir, configure_determinism, resolve_device

OUT = Path("data/experts")


def main() -> None:
    p = load_params()
    configure_determinism(p.seed)
    device = resolve_device(p.device)
    prepared = Prepared.from_dict(artifacts.load("data/prepared/ind.pt"))
    pool = artifacts.load("data/outliers/pool.pt")
    with atomic_dir(OUT) as out:
        meta = train_experts(
            out,
            p.net_spec(),
            prepared.norm(prepared.train_x),
            prepared.train_y,
            prepared.norm(pool["x"]),
            prepared.norm(prepared.test_x),
            prepared.test_y,
            p.experts,
            p.lambda_oe,
            p.seed,
            device,
        )
    accs = ", ".join(f"{r['test_acc']:.2f}" for r in meta["experts"])
    print(f"experts: {meta['num_experts']} x {meta['epochs']} epochs on {device}; final test accuracy {accs}")


if __name__ == "__main__":
    run_stage(main)
