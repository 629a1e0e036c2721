"""Reading and writing the files that stages pass to each other, and :class:`Artifact`, the contract of each.

Every such file has one class that names its path and its fields (``to_dict`` / ``from_dict``), with
``save`` and ``load``; its docstring and fields are the format's documentation:

- ``data/prepared/ind.pt``: :class:`trustdd.data.prepared.Prepared` (prepare_data), the InD split and its
  input transform;
- ``data/ood/ood.pt``: :class:`trustdd.data.ood.OODSets` (prepare_ood), the OOD test sets;
- ``data/outliers/pool.pt``: :class:`trustdd.outliers.pool.OutlierPool` (prepare_outliers);
- ``data/distilled/distilled.pt``: :class:`trustdd.distill.distilled.DistilledFile` (distill), the
  distilled set, with what the method started from and the input transform;
- ``data/experts/``: one ``expert_XXX.pt`` per expert and ``meta.json`` (train_experts), read by
  :class:`trustdd.experts.ExpertBuffer` (memory-mapped, two epochs at a time).

All tensors are saved with ``torch.save`` (zip format, ``weights_only``-loadable: tensors, lists,
dicts, strings and numbers only), written to a temporary name and renamed, so a killed stage never
leaves a half-written file. A file that exists but cannot be read, or lacks a field, raises
:class:`ArtifactError`, naming it and how to restore it (``dvc checkout`` or rerunning the stage that
makes it, found in ``dvc.yaml``).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from trustdd.runtime import tmp_sibling


class ArtifactError(RuntimeError):
    """A file that a stage reads exists but cannot be read (truncated, damaged, or not a torch file), or lacks
    a field of its artefact."""


def save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        torch.save(obj, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load(path: str | Path, mmap: bool = False) -> Any:
    """``mmap=True`` maps the tensors' storage from the file instead of reading it: only the parts that
    are indexed are read from disk (e.g. two epochs of an expert trajectory).

    A file that is missing, or present but unreadable, raises an error naming it and how to get it back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (`dvc repro`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:  # a complete file, but with objects that a safe load refuses
        raise ArtifactError(
            f"{path} holds objects other than tensors, lists, dicts, strings and numbers, which are not loaded "
            f"(safe loading, weights_only): {_first_line(err, 'Unsupported')}; save it with plain tensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ArtifactError(f"{path} cannot be read ({type(err).__name__}: {_first_line(err)}); {restore_hint(path)}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(err: BaseException, prefer: str = "") -> str:
    """The line of an error's message that says most: the first holding ``prefer``, else the first."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    return next((line for line in lines if prefer and prefer in line), lines[0] if lines else "no detail")


def producer(path: str | Path, dvc_yaml: str | Path = "dvc.yaml") -> str | None:
    """The stage in ``dvc_yaml`` whose output is ``path`` or a folder holding it (None when none is)."""
    try:
        stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    target = Path(os.path.normpath(path))
    for name, stage in stages.items():
        for out in [*stage.get("outs", []), *stage.get("metrics", [])]:
            out = Path(os.path.normpath(next(iter(out)) if isinstance(out, dict) else out))
            if target == out or out in target.parents:
                return name
    return None


def restore_hint(path: str | Path) -> str:
    """How to get a damaged file back: from DVC's cache, or by making it again."""
    stage = producer(path)
    if stage is None:
        return "it is damaged or truncated: replace it with a complete copy"
    return (f"it is damaged or truncated: restore it from DVC's cache with `dvc checkout -f {path}`, "
            f"or make it again with `dvc repro -f -s {stage}`")


class Artifact:
    """One stage output file: ``PATH`` is where the pipeline keeps it, ``to_dict`` / ``from_dict`` its
    fields (tensors, lists, dicts, strings and numbers). A subclass is a dataclass of those fields."""

    PATH: ClassVar[Path]

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        raise NotImplementedError

    def save(self, folder: str | Path | None = None) -> Path:
        """Write to ``folder / PATH.name`` (a stage's scratch folder, renamed into place when complete), or
        to ``PATH``; returns the path written."""
        path = Path(folder) / self.PATH.name if folder is not None else self.PATH
        save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path | None = None, mmap: bool = False) -> Any:
        """Read ``path`` (default ``PATH``); a file without the fields of this artefact raises ArtifactError."""
        path = Path(path) if path is not None else cls.PATH
        d = load(path, mmap)
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as err:  # a field missing, or of another kind (an older or foreign file)
            raise ArtifactError(
                f"{path} is not a {cls.__name__} file ({type(err).__name__}: {err} in its fields); {restore_hint(path)}"
            ) from None
