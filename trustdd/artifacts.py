"""The on-disk formats passed between stages, in one place.

All tensors are saved with ``torch.save`` (zip format, ``weights_only``-loadable: tensors, lists,
dicts, strings and numbers only), written to a temporary name and renamed, so a killed stage never
leaves a half-written file. A file that exists but cannot be read raises :class:`ArtifactError`, naming
it and how to restore it (``dvc checkout`` or rerunning the stage that makes it, found in ``dvc.yaml``).

- ``prepared/ind.pt``: ``train_x``/``test_x`` uint8 N x C x H x W, ``train_y``/``test_y`` int64,
  ``dataset``, ``classes``, ``mean``, ``std``; and, only when they apply: ``zca``
  ``{mean, eigvecs, eigvals, reg}`` (``data.zca`` true); ``verified`` (always False) and ``checksums``
  ``{file: md5}`` of the md5-checked files read (``data.verify`` false, for a dataset with such files:
  MNIST, Fashion-MNIST, SVHN, CIFAR-10/100); ``skipped`` ``[{file, error}]``, the undecodable image
  files left out (``imagefolder``).
- ``ood/ood.pt``: ``images`` ``{set name: uint8 N x C x H x W}``, ``groups`` ``{set name: near | far}``,
  and ``skipped`` ``{set name: why}`` when optional sets were left out because their files are missing.
- ``outliers/pool.pt``: ``x`` uint8, ``kind`` int64, ``kinds`` (names), ``source``.
- ``experts/expert_XXX.pt``: ``trajectory`` float32 (epochs + 1) x P, the flat parameter vector of
  the network after 0, 1, ..., E epochs (order: ``net.parameters()``), one file (shard) per expert,
  memory-mapped when read; ``experts/meta.json`` holds the network spec, parameter names and shapes,
  each expert's training record and the buffer's size on disk.
- ``distilled/distilled.pt``: ``x_in`` float32 (K*ipc) x C x H x W and ``x_out`` (K*ipc or 0 images)
  in the networks' normalised input space, ``y_in`` int64, ``lr`` (learned student lr), ``method``,
  ``dataset``, ``mean``, ``std``, ``zca``; ``y_soft`` float32 (K*ipc) x K class probabilities when the
  method made soft labels (``y_in`` keeps the class each image was drawn for); ``init``: what the method started from,
  ``{x_in, y_in, x_out, lr[, y_soft]}``, which evaluation trains as the ``init`` set.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from trustdd.runtime import tmp_sibling


class ArtifactError(RuntimeError):
    """A file that a stage reads exists but cannot be read (truncated, damaged, or not a torch file)."""


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
