"""Stage 3: expert trajectories (networks trained on real InD + outliers, snapshotted every epoch).

Only trajectory-matching methods use them: for any other method (e.g. ``dsa``) the stage writes an
empty buffer in a second. It tracks ``method`` so that switching back restores the trained experts
from DVC's run cache instead of training them again."""

from pathlib import Path

from trustdd import distributed
from trustdd.cli import run_stage
from trustdd.data.prepared import Prepared
from trustdd.experts import human_bytes, train_experts, write_not_needed
from trustdd.outliers.pool import OutlierPool
from trustdd.params import load_params
from trustdd.runtime import atomic_dir, configure_determinism

OUT = Path("data/experts")


def main() -> None:
    p = load_params()
    needed = p.method_config().needs_experts
    if needed and distributed.relaunch(p.parallel.nproc, outputs=[OUT]):  # this script, on nproc processes
        return
    with distributed.join(p.parallel, p.device) as (group, device):
        if not needed:
            if group.is_main:
                with atomic_dir(OUT) as out:
                    print(f"experts: none trained; {write_not_needed(out, p.method)['skipped']}")
            return
        configure_determinism(p.seed)
        prepared = Prepared.load()
        pool = OutlierPool.load()
        with group.atomic_dir(OUT) as out:
            meta = train_experts(
                out,
                p.net_spec(),
                prepared.norm(prepared.train_x),
                prepared.train_y,
                prepared.norm(pool.x),
                prepared.norm(prepared.test_x),
                prepared.test_y,
                p.experts,
                p.lambda_oe,
                p.seed,
                device,
                p.workers,
                group,
            )
    if meta is None:  # a rank other than 0: rank 0 reports
        return
    accs = ", ".join(f"{r['test_acc']:.2f}" for r in meta["experts"])
    where = f"{device}" if group.world == 1 else f"{group.world} processes ({device} on rank 0)"
    print(f"experts: {meta['num_experts']} x {meta['epochs']} epochs on {where}; final test accuracy {accs}")
    print(f"expert buffer: {human_bytes(meta['bytes_on_disk'])} on disk in {OUT}/ ({meta['num_params']:,} parameters x "
          f"{meta['epochs'] + 1} snapshots x {meta['num_experts']} experts, float32, one file per expert)")


if __name__ == "__main__":
    run_stage(main)
