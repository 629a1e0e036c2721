"""The on-disk formats passed between stages, in one place.

All tensors are saved with ``torch.save`` (zip format, ``weights_only``-loadable: tensors, lists,
dicts, strings and numbers only), written to a temporary name and renamed, so a killed stage never
leaves a half-written file.

- ``prepared/ind.pt``: ``train_x``/``test_x`` uint8 N x C x H x W, ``train_y``/``test_y`` int64,
  ``dataset``, ``classes``, ``mean``, ``std``.
- ``prepared/ood.pt``: ``{set name: uint8 N x C x H x W}``.
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
from pathlib import Path
from typing import Any

import torch


def save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path, mmap: bool = False) -> Any:
    """``mmap=True`` maps the tensors' storage from the file instead of reading it: only the parts that
    are indexed are read from disk (e.g. two epochs of an expert trajectory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (`dvc repro`)")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
