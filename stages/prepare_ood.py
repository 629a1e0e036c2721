"""Stage 2: the OOD test sets (built-in and the user's own), uint8 in the InD shape, in data/ood/."""

from pathlib import Path

from trustdd.cli import run_stage
from trustdd.data.ood_sets import build_ood_sets
from trustdd.params import load_params
from trustdd.previews import labelled_grid
from trustdd.runtime import atomic_dir, configure_determinism, write_json

OUT = Path("data/ood")
PREVIEW = 8  # images per set in preview.png


def main() -> None:
    p = load_params()
    configure_determinism(p.seed)
    o = p.ood
    sets = build_ood_sets(o.sets, o.user, o.groups, o.size, p.ind_shape(), p.seed, p.dataset, p.data_files(), o.optional)
    with atomic_dir(OUT) as out:
        sets.save(out)
        write_json(out / "sets.json", sets.report)
        labelled_grid(sets.preview(PREVIEW), [name for name, x in sets.images.items() if x.shape[0]], PREVIEW,
                      out / "preview.png")
    print("OOD sets: " + ", ".join(f"{k} {v['images']} ({v['group'] or 'no group'})" for k, v in sets.report.items()))


if __name__ == "__main__":
    run_stage(main)
