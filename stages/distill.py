"""Stage 4: distill S_in (and S_out when there are outliers) with the chosen method."""

from pathlib import Path

from trustdd import distributed, timing
from trustdd.cli import run_stage
from trustdd.data.prepared import Prepared
from trustdd.distill.distilled import DistilledFile
from trustdd.distill.methods import DistillTask  # registers every method
from trustdd.params import load_params
from trustdd.previews import labelled_grid
from trustdd.runtime import atomic_dir, configure_determinism, json_text, write_all

OUT = Path("data/distilled")
CURVE = Path("metrics/distill_curve.json")
TIMES = Path("metrics/timing/distill.json")


def main() -> None:
    p = load_params()
    method = p.method_config()
    parallel = method.parallel  # a method that divides its work over processes says so
    if p.parallel.nproc > 1 and not parallel:
        print(f"distill: method {p.method!r} runs on one process (parallel.nproc {p.parallel.nproc} is for "
              "train_experts and evaluate)")
    elif distributed.relaunch(p.parallel.nproc, outputs=[OUT]):  # this script, on nproc processes
        return
    with distributed.join(p.parallel, p.device) as (group, device):
        if group.is_main or parallel:  # under torchrun, a one-process method runs on rank 0 alone
            configure_determinism(p.seed)
            prepared = Prepared.load()
            task = DistillTask.from_files(p, device, prepared, group=group if parallel else distributed.SINGLE)
            result = method.run(task)
            if group.is_main:
                write(p, prepared, result, task)


def write(p, prepared: Prepared, result, task: DistillTask) -> None:
    """Rank 0's outputs: the set (with what it started from), its image grids and the loss curve."""
    with atomic_dir(OUT) as out:
        DistilledFile.of(result, prepared.dataset, prepared.transform, prepared.classes, p.net_spec()).save(out)
        to_pixels = prepared.transform.inverse
        rows = range(result.x_in.shape[0] // p.ipc)  # one row per class (or outlier block) of ipc images
        labelled_grid(to_pixels(result.x_in), [prepared.classes[int(result.y_in[r * p.ipc])] for r in rows], p.ipc,
                      out / "images_in.png")
        if result.x_out.shape[0]:
            blocks = range(result.x_out.shape[0] // p.ipc)
            labelled_grid(to_pixels(result.x_out), [task.block_label(b) for b in blocks], p.ipc, out / "images_out.png")
    # wall time differs run to run, so it stays out of the DVC-tracked curve (and out of dvc.lock)
    times = [{"iteration": r["iteration"], "seconds": s} for r, s in zip(result.history, result.seconds)]
    write_all({CURVE: json_text({"distill": result.history}), TIMES: json_text({"distill": times})})
    if len(times) > 1:  # the iterations after the first window, in the method's units of work (smoke runs only)
        method = p.method_config()
        per_iteration = method.work(p.ipc) / max(1, method.iterations)
        done = times[-1]["iteration"] - times[0]["iteration"]
        timing.record(round(done * per_iteration), times[-1]["seconds"] - times[0]["seconds"], "distill")
    print(f"distilled with {result.method}: S_in {tuple(result.x_in.shape)}, S_out {tuple(result.x_out.shape)}, lr {result.lr:.5f}")


if __name__ == "__main__":
    run_stage(main)
