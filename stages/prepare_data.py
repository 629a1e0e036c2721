"""Stage 1: the InD train/test split, as uint8 tensors (and the input transform) in data/prepared/."""

from pathlib import Path

from trustdd.cli import run_stage
from trustdd.data.prepared import prepare
from trustdd.params import load_params
from trustdd.runtime import atomic_dir, configure_determinism, generator

OUT = Path("data/prepared")


def main() -> None:
    p = load_params()
    configure_determinism(p.seed)
    info = p.dataset_info  # resolved: a user's own data has its channels, size and classes from the files
    files = p.data_files()
    split = info.load(files.root, files.download, p.data.image_size, files.verify)
    zca_reg = p.data.zca_reg if p.data.zca else None
    prepared = prepare(info, split, p.data.train_limit, generator(p.seed, "train_limit"), zca_reg)
    with atomic_dir(OUT) as out:
        prepared.save(out)
    print(f"{p.dataset}: train {tuple(prepared.train_x.shape)}, test {tuple(prepared.test_x.shape)}")


if __name__ == "__main__":
    run_stage(main)
