"""The OOD test sets on disk, ``data/ood/ood.pt`` (:class:`OODSets`): written by prepare_ood, read by
evaluate. :mod:`trustdd.data.ood_sets` builds them; this module is apart so that reading the sets imports
none of the readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trustdd.artifacts import Artifact


@dataclass(frozen=True)
class OODSets(Artifact):
    """``data/ood/ood.pt``, written by prepare_ood: ``images`` ``{set: uint8 N x C x H x W}`` in the InD shape,
    ``groups`` ``{set: near | far}``, and ``skipped`` ``{set: why}`` when optional sets were left out because
    their files are missing. ``report`` (how each set was read) goes to ``sets.json`` beside it."""

    PATH = Path("data/ood/ood.pt")

    images: dict[str, torch.Tensor]  # uint8 N x C x H x W, InD shape
    groups: dict[str, str]  # set -> near | far (ungrouped sets are absent)
    report: dict[str, dict] = field(default_factory=dict)  # set -> {source, images, group, skipped...}
    skipped: dict[str, str] = field(default_factory=dict)  # optional sets left out because missing -> why

    def to_dict(self) -> dict:
        return {"images": self.images, "groups": self.groups, **({"skipped": self.skipped} if self.skipped else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "OODSets":
        return cls(d["images"], d["groups"], skipped=d.get("skipped", {}))

    def preview(self, per_set: int = 8) -> torch.Tensor:
        """The first ``per_set`` images of every non-empty set, one row each (black where a set is
        smaller), as floats in [0, 1] for ``torchvision.utils.save_image(..., nrow=per_set)``."""
        rows = []
        for x in self.images.values():
            if x.shape[0]:
                row = x[:per_set].float() / 255.0
                rows += [row, row.new_zeros(per_set - row.shape[0], *row.shape[1:])]
        return torch.cat(rows)
