"""Independent jobs (expert trajectories, evaluation nets) in one-thread worker processes.

``run_jobs(fn, jobs, shared, workers)`` returns ``[fn(job, shared) for job in jobs]``. With ``workers`` 0
it runs them here, on torch's threads (a stage's historical behaviour). With ``workers`` N > 0 it runs
them in N spawned processes of ONE thread each: a job's float reductions then depend neither on how many
workers there are nor on how many cores the machine has, so the outputs are the same bytes for any
N >= 1 (and differ from ``workers: 0`` only by float rounding). Measured on the 2-core default
(benchmarks/repro_time.py), two workers are no faster than one two-thread process: these small nets are
bound by memory bandwidth, which the two processes share. With more cores than workers per job, or a
GPU that one net leaves idle, N processes run N nets at once.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence, TypeVar

import torch
from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")

_SHARED: Any = None


def _start(shared: Any) -> None:
    global _SHARED
    torch.set_num_threads(1)
    _SHARED = shared


def _call(fn: Callable[[J, Any], R], job: J) -> R:
    return fn(job, _SHARED)


def run_jobs(fn: Callable[[J, Any], R], jobs: Sequence[J], shared: Any, workers: int = 0, desc: str = "jobs") -> list[R]:
    """``fn`` must be a module-level function (it is sent to the workers by name); ``shared`` is sent to
    each worker once. Results come back in the order of ``jobs``; a job's exception is raised here."""
    bar = tqdm(total=len(jobs), desc=desc, unit="job")
    try:
        if not workers:
            results = []
            for job in jobs:
                results.append(fn(job, shared))
                bar.update()
            return results
        context = torch.multiprocessing.get_context("spawn")  # never fork a threaded torch
        with ProcessPoolExecutor(min(workers, len(jobs)) or 1, mp_context=context, initializer=_start, initargs=(shared,)) as pool:
            futures = [pool.submit(_call, fn, job) for job in jobs]
            for _ in as_completed(futures):
                bar.update()
            return [f.result() for f in futures]
    finally:
        bar.close()
