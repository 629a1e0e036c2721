"""The image sets an evaluation trains on: a distilled set read from disk, and the baselines built from
real data (a random subset of the same size, and the whole train set).

:func:`load_distilled` reads the project's own ``distilled.pt`` or a plain pair of tensors as MTT and
its descendants write them (``images_best.pt`` + ``labels_best.pt``, ``images_<it>.pt`` + ``labels_<it>.pt``,
or ``images.pt`` + ``labels.pt``), so sets made elsewhere can be scored with the same protocol.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path

import torch

from trustdd import artifacts
from trustdd.data.images import InputTransform, stratified_subset
from trustdd.distill.distilled import DistilledFile
from trustdd.runtime import generator


class DistilledSetError(ValueError):
    """A set named by ``evaluate.set`` cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class TrainingSet:
    """Images (network inputs, float N x C x H x W) that fresh evaluation nets are trained on."""

    name: str  # distilled | init | random | full
    x_in: torch.Tensor
    y_in: torch.Tensor
    x_out: torch.Tensor  # outliers for the OE loss (0 images when the set has none)
    lr: float | None  # the lr the set comes with (MTT learns one), else None
    origin: str  # where it came from, for the report
    y_soft: torch.Tensor | None = None  # soft labels: N x K class probabilities that nets train on instead of y_in

    @property
    def targets(self) -> torch.Tensor:
        """What nets are trained to predict: the soft labels when the set has them, else ``y_in``."""
        return self.y_in if self.y_soft is None else self.y_soft

    @property
    def per_class(self) -> torch.Tensor:
        return torch.bincount(self.y_in)


@dataclass(frozen=True)
class LoadedSet:
    set: TrainingSet
    transform: InputTransform  # how uint8 test and OOD images map into the set's input space
    method: str
    init: TrainingSet | None = None  # what the distillation started from (trustdd sets only)


KEY = "evaluate.set"


def load_distilled(
    path: str | Path,
    transform: InputTransform | None,
    shape: tuple[int, int, int],
    num_classes: int,
    mmap: bool = False,
) -> LoadedSet:
    """Read a distilled set. ``transform`` and ``shape`` come from the prepared InD data: plain tensor pairs
    carry no transform of their own, so float images are taken to be in that input space already (as MTT
    saves them: normalised, and ZCA-whitened when it ran with --zca; set ``data.zca`` to match) and uint8
    images are mapped through it (``transform=None``, as params validation reads the set before any data is
    prepared, leaves them as they are: every shape and label check still runs; ``mmap=True`` maps the tensors
    from the file instead of reading them, for a check that costs little whatever the set's size)."""
    path = Path(path)
    if not path.exists():
        raise DistilledSetError(
            f"{KEY}: {str(path)!r} does not exist; expected the project's distilled.pt, an MTT-style "
            "images*.pt file (its labels*.pt beside it), or a folder holding such a pair"
        )
    if path.is_file() and not path.name.startswith("images"):
        d = _read(path, mmap)
        if not isinstance(d, dict) or not {"x_in", "y_in"} <= set(d):
            raise DistilledSetError(
                f"{KEY}: {str(path)!r} is not a trustdd distilled set (a dict with x_in, y_in, x_out, lr, mean, std: "
                "trustdd.distill.distilled.DistilledFile); "
                "a plain tensor file must be named images*.pt with labels*.pt beside it"
            )
        try:
            return _trustdd_set(DistilledFile.from_dict(d), transform, shape, num_classes, path)
        except (KeyError, TypeError, AttributeError) as err:  # a field missing or of the wrong kind
            raise DistilledSetError(
                f"{KEY}: {str(path)!r} is not a complete trustdd distilled set ({type(err).__name__}: {err}); "
                "expected the fields of trustdd.distill.distilled.DistilledFile"
            ) from None
    images, labels = _pair(path)
    x = _tensor(images, "images", mmap)
    y = _tensor(labels, "labels", mmap)
    if x.dtype == torch.uint8 and transform is not None:
        x = transform(x)
    if y.is_floating_point():
        if y.ndim != 2:
            raise DistilledSetError(
                f"{KEY}: {labels} holds float labels of shape {tuple(y.shape)}; expected N class indices"
            )
        soft = torch.softmax(y.float(), dim=1)  # learned labels (DATM): one row of class logits per image
        y = y.argmax(dim=1)
    else:
        soft = None
    result = TrainingSet("distilled", x.float(), y.long(), torch.empty(0, *shape), None, str(images), soft)
    _check(result, shape, num_classes, images)
    return LoadedSet(result, transform, "external")


def _trustdd_set(
    f: DistilledFile, transform: InputTransform | None, shape: tuple[int, int, int], num_classes: int, path: Path
) -> LoadedSet:
    """The distilled set of a trustdd file and, when it records one, the set it started from."""
    sets = []
    for name, part in (("distilled", f.to_dict()), ("init", f.init)):  # the same keys: x_in, y_in, x_out, lr, y_soft
        if part is None:
            continue
        x_out = part.get("x_out")
        x_out = torch.empty(0, *shape) if x_out is None else x_out
        origin = str(path) if name == "distilled" else f"the starting point of {path} (before distillation)"
        s = TrainingSet(name, part["x_in"].float(), part["y_in"].long(), x_out.float(), part.get("lr"), origin,
                        _soft(part.get("y_soft"), part["y_in"], path))
        _check(s, shape, num_classes, path)
        sets.append(s)
    return LoadedSet(sets[0], f.transform or transform, f.method, sets[1] if len(sets) > 1 else None)


def _soft(soft: torch.Tensor | None, y_in: torch.Tensor, path: Path) -> torch.Tensor | None:
    """A trustdd set's soft labels (``y_soft``: class probabilities), checked against its ``y_in``."""
    if soft is None:
        return None
    if soft.ndim != 2 or soft.shape[0] != y_in.shape[0]:
        raise DistilledSetError(f"{KEY}: y_soft in {str(path)!r} has shape {tuple(soft.shape)}; expected one row per image")
    return soft.float()


def _pair(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        for stem in ("images_best", "images"):
            if (path / f"{stem}.pt").exists():
                images = path / f"{stem}.pt"
                break
        else:
            found = sorted(p.name for p in path.glob("images*.pt"))
            raise DistilledSetError(
                f"{KEY}: no images_best.pt or images.pt in {str(path)!r}"
                + (f" (found {', '.join(found)}: point {KEY} at one of them)" if found else "")
            )
    else:
        images = path
    labels = images.with_name("labels" + images.name[len("images") :])
    if not labels.exists():
        raise DistilledSetError(f"{KEY}: {str(images)!r} has no labels file beside it; expected {str(labels)!r}")
    return images, labels


def _read(path: Path, mmap: bool = False):
    try:
        try:
            return artifacts.load(path, mmap=mmap)
        except artifacts.ArtifactError:
            if not mmap:
                raise
            return artifacts.load(path)  # files in torch's legacy (non-zip) format cannot be memory-mapped
    except artifacts.ArtifactError as err:
        raise DistilledSetError(f"{KEY}: {err}") from None


def _tensor(path: Path, what: str, mmap: bool = False) -> torch.Tensor:
    obj = _read(path, mmap)
    if not isinstance(obj, torch.Tensor):
        raise DistilledSetError(f"{KEY}: {str(path)!r} holds a {type(obj).__name__}; expected one tensor of {what}")
    return obj.detach().cpu()


def _check(s: TrainingSet, shape: tuple[int, int, int], num_classes: int, path: Path) -> None:
    named = [("images", s.x_in)] + ([("outliers", s.x_out)] if s.x_out.numel() else [])
    for name, x in named:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
            raise DistilledSetError(
                f"{KEY}: {name} in {str(path)!r} have shape {tuple(x.shape)}; expected N x {' x '.join(map(str, shape))} "
                "(the dataset's shape: set `dataset` to the one the set was distilled from)"
            )
    if s.y_in.ndim != 1 or s.y_in.shape[0] != s.x_in.shape[0]:
        raise DistilledSetError(
            f"{KEY}: {s.x_in.shape[0]} images but labels of shape {tuple(s.y_in.shape)} in {str(path)!r}"
        )
    if s.y_soft is not None and s.y_soft.shape[1] != num_classes:
        raise DistilledSetError(
            f"{KEY}: soft labels in {str(path)!r} have {s.y_soft.shape[1]} columns; the dataset has {num_classes} classes"
        )
    if s.y_in.numel() == 0:
        raise DistilledSetError(f"{KEY}: {str(path)!r} holds no images")
    if s.lr is not None and not (math.isfinite(s.lr) and s.lr > 0):
        raise DistilledSetError(
            f"{KEY}: {s.origin} carries the learned lr {s.lr!r}; expected a finite number > 0 (its distillation "
            "diverged: distill it again with a lower distill.mtt.lr_img or lr_lr)"
        )
    for name, x in named:
        if not bool(torch.isfinite(x).all()):
            raise DistilledSetError(f"{KEY}: {name} in {str(path)!r} hold non-finite values (its distillation diverged)")
    low, high = int(s.y_in.min()), int(s.y_in.max())
    if low < 0 or high >= num_classes:
        raise DistilledSetError(
            f"{KEY}: labels in {str(path)!r} run from {low} to {high}; the dataset has classes 0..{num_classes - 1}"
        )


def random_subset(
    like: TrainingSet,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    pool_x: torch.Tensor,
    transform: InputTransform,
    seed: int,
) -> TrainingSet:
    """The honest yardstick: as many random real train images per class as ``like`` has, and as many random
    pool outliers as it has outliers (uint8 in, network inputs out). Seeded by ``seed`` alone."""
    g = generator(seed, "random_subset")
    pick = stratified_subset(train_y, like.per_class.tolist(), g)
    n_out = like.x_out.shape[0]
    if pool_x.shape[0] < n_out:
        raise ValueError(f"random subset: the outlier pool has {pool_x.shape[0]} images; the set has {n_out} outliers")
    out_pick = torch.randperm(pool_x.shape[0], generator=g)[:n_out].sort().values
    return TrainingSet(
        "random",
        transform(train_x[pick]),
        train_y[pick],
        transform(pool_x[out_pick]),
        None,
        f"{len(pick)} random train images, {n_out} random pool outliers",
    )


def full_data(
    like: TrainingSet, train_x: torch.Tensor, train_y: torch.Tensor, pool_x: torch.Tensor, transform: InputTransform
) -> TrainingSet:
    """The ceiling: every InD train image, and the whole outlier pool when ``like`` trains with outliers."""
    x_out = pool_x if like.x_out.shape[0] else pool_x[:0]
    return TrainingSet(
        "full",
        transform(train_x),
        train_y,
        transform(x_out),
        None,
        f"all {train_x.shape[0]} train images, {x_out.shape[0]} pool outliers",
    )
