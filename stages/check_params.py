"""Stage 0: validate the whole params.yaml before any work.

It tracks every key of params.yaml, so any edit (a misspelt key included) reruns it, and the first
stages depend on its output, so `dvc repro` and `dvc exp run` stop here, in seconds, on a bad value.
The output is the same bytes for every valid params.yaml: a valid edit reruns only what it changes."""

from pathlib import Path

from trustdd.cli import run_stage
from trustdd.params import load_params
from trustdd.runtime import atomic_write_text

OUT = Path("data/params_ok.txt")


def main() -> None:
    load_params()
    atomic_write_text(OUT, "params.yaml passed trustdd.params validation\n")


if __name__ == "__main__":
    run_stage(main)
