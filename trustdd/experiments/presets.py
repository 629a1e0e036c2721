"""Paper-scale presets: YAML files in ``presets/`` whose keys override ``params.yaml``, applied with one
command as a DVC experiment (``dvc exp run -n NAME -S key=value ...``), so params.yaml is never edited.

    python -m trustdd.experiments.presets list
    python -m trustdd.experiments.presets show cifar10-ipc10          # the -S overrides and the merged, validated params
    python -m trustdd.experiments.presets run cifar10-ipc10 [--temp | --queue | other dvc exp run options]
    python -m trustdd.experiments.presets run cifar10-ipc10 --smoke [--keep] [-S key=value ...]   # first: every
        stage at the preset's shapes and a tiny budget, timed, with the full run's cost (trustdd.experiments.smoke)
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from trustdd.experiments import smoke
from trustdd.experiments.overrides import flatten, hydra_value, merge
from trustdd.params import ParamsError, params_from_dict

PRESETS = Path("presets")


class PresetError(ValueError):
    """An unknown preset, or a preset that does not fit params.yaml."""


def names(folder: Path = PRESETS) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load(name: str, folder: Path = PRESETS) -> dict:
    path = Path(folder) / f"{name}.yaml"
    if not path.exists():
        raise PresetError(f"preset {name!r} not found in {folder}/; valid: {', '.join(names(folder)) or '(none)'}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of params keys, got {type(data).__name__}")
    return data


def overrides(preset: dict, params: dict) -> list[str]:
    """``key=value`` for every key of the preset; each key must already be in params.yaml (``-S`` can only
    change existing keys, and a misspelt key would otherwise be silently added)."""
    known = flatten(params)
    result = []
    for key, value in flatten(preset).items():
        if key not in known:
            raise PresetError(
                f"preset key {key!r} is not in params.yaml; valid keys include: {', '.join(sorted(known)[:12])} ..."
            )
        result.append(f"{key}={hydra_value(value)}")
    return result


def resolve(name: str, folder: Path = PRESETS, params_path: Path = Path("params.yaml")):
    """(overrides, validated Params) of a preset applied to params.yaml; raises PresetError/ParamsError."""
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    preset = load(name, folder)
    args = overrides(preset, base)
    try:
        params = params_from_dict(merge(base, preset))
    except ParamsError as err:
        raise PresetError(f"preset {name!r}: {err}") from None
    return args, params


def command(name: str, args: list[str], extra: list[str]) -> list[str]:
    cmd = ["dvc", "exp", "run"]
    if not any(e in ("-n", "--name") or e.startswith("--name=") for e in extra):
        cmd += ["-n", name]
    for a in args:
        cmd += ["-S", a]
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("list", "show", "run"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] == "list":
        for n in names():
            print(n)
        return 0
    if len(argv) < 2:
        print(f"usage: python -m trustdd.experiments.presets {argv[0]} NAME; presets: {', '.join(names())}", file=sys.stderr)
        return 2
    try:
        args, params = resolve(argv[1])
    except (PresetError, ParamsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = argv[2:]
    if argv[0] == "run" and "--smoke" in extra:
        keep = "--keep" in extra
        rest = [e for e in extra if e not in ("--smoke", "--keep")]
        base = yaml.safe_load(Path("params.yaml").read_text()) or {}
        try:
            return smoke.run(argv[1], load(argv[1]), base, rest, keep=keep)
        except (smoke.SmokeError, ParamsError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    cmd = command(argv[1], args, extra)
    if argv[0] == "show":
        print(shlex.join(cmd))
        print(f"# dataset {params.dataset} {params.ind_shape()}, ipc {params.ipc}, network {params.net_spec()}")
        return 0
    print(shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
