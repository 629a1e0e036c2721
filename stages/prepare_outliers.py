"""Stage 2: the outlier pool (none / POE corruptions / real OE data) and a preview grid."""

from pathlib import Path

import torch

from trustdd.cli import run_stage
from trustdd.data.prepared import Prepared
from trustdd.outliers.sources import PoolRequest, build_pool
from trustdd.params import load_params
from trustdd.previews import labelled_grid
from trustdd.runtime import atomic_dir, configure_determinism, generator

OUT = Path("data/outliers")
PREVIEW_PER_KIND = 16


def main() -> None:
    p = load_params()
    configure_determinism(p.seed)
    prepared = Prepared.load()
    request = PoolRequest(
        train_x=prepared.train_x,
        corruptions=p.outliers.corruptions,
        options=p.outliers.options,
        per_type=p.outliers.per_type,
        generator=generator(p.seed, "outliers"),
        oe=p.outliers.oe,
    )
    pool = build_pool(p.outliers.source, request)
    with atomic_dir(OUT) as out:
        pool.save(out)
        if len(pool):
            rows = [pool.x[pool.kind == k][:PREVIEW_PER_KIND] for k in range(len(pool.kinds))]
            rows = [torch.cat([r, r.new_zeros(PREVIEW_PER_KIND - r.shape[0], *r.shape[1:])]) for r in rows]  # black
            labelled_grid(torch.cat(rows).float() / 255.0, list(pool.kinds), PREVIEW_PER_KIND, out / "preview.png")
    print(f"outliers: source {pool.source}, {len(pool)} images, kinds {list(pool.kinds)}")


if __name__ == "__main__":
    run_stage(main)
