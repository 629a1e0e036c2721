"""Wall time and peak memory of the default pipeline, stage by stage, run through DVC.

    python benchmarks/repro_time.py            # from the project root, with the venv's bin on PATH

Each stage is forced to run (``dvc repro --force --single-item STAGE``, in pipeline order), so the sum
is what a fresh ``dvc repro`` costs, DVC's own overhead included. Peak memory is the largest resident
set of any process the stages started (``getrusage(RUSAGE_CHILDREN).ru_maxrss``). Set-up (venv,
installs, data download) is not counted. Prints a table and writes the figures as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml


def stages(dvc_yaml: Path) -> list[str]:
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/last_run.json"))
    args = ap.parse_args()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    timings, peaks = {}, {}
    for stage in stages(Path("dvc.yaml")):
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "--force", "--single-item", stage], check=True, env=env)
        timings[stage] = round(time.perf_counter() - start, 1)
        # the largest child so far: a stage that raises it is the one that peaked there
        peaks[stage] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    peak_mb = max(peaks.values())
    result = {
        "stages_seconds": timings,
        "total_seconds": round(sum(timings.values()), 1),
        "peak_rss_mb": round(peak_mb),
        "peak_rss_mb_after_stage": peaks,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'stage':<20}{'seconds':>10}{'peak MB so far':>16}")
    for stage, seconds in timings.items():
        print(f"{stage:<20}{seconds:>10.1f}{peaks[stage]:>16}")
    print(f"{'total':<20}{result['total_seconds']:>10.1f}\npeak memory of a stage process: {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
