"""How far trustdd's ``pixelate`` is from the TrustDD reference mosaic: PIL ``BOX`` resize down to
``int(side * factor)``, then ``BOX`` back up to the side (utils/gen_ood_loader_cifar.py of the TrustDD code).

    PYTHONPATH=. python benchmarks/pixelate_vs_pil.py    # PYTHONPATH: this checkout's trustdd

Prints one JSON line per (image shape, factor): the max and mean absolute difference, in [0, 1] units,

- ``uint8``: the pool's images, ``to_uint8(pixelate(x / 255))``, against PIL on the uint8 image (what the
  reference code does; PIL rounds after each of its four 1-D passes, so 1/255 apart is expected);
- ``float``: ``pixelate(x)`` against PIL on 32-bit float images (mode ``F``, no rounding).

Random uint8 images, 16 per shape, seed 0.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from trustdd.data.images import to_uint8
from trustdd.outliers.corruptions import Pixelate

SHAPES = [(3, 32, 32), (1, 28, 28), (3, 30, 45)]
FACTORS = [0.2, 0.25, 0.3, 0.5, 0.7]


def pil_mosaic(plane: Image.Image, factor: float) -> Image.Image:
    w, h = plane.size
    return plane.resize((int(w * factor), int(h * factor)), Image.BOX).resize((w, h), Image.BOX)


def reference_uint8(x: np.ndarray, factor: float) -> np.ndarray:
    """N x C x H x W uint8 -> the same, through PIL on RGB / L images."""
    out = []
    for img in x:
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        arr = np.asarray(pil_mosaic(pil, factor))
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out)


def reference_float(x: np.ndarray, factor: float) -> np.ndarray:
    """N x C x H x W float32 -> the same, one PIL mode-F image per channel."""
    return np.stack([[np.asarray(pil_mosaic(Image.fromarray(p, mode="F"), factor)) for p in img] for img in x])


def main() -> None:
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x8 = rng.integers(0, 256, (16, *shape), dtype=np.uint8)
        x = torch.from_numpy(x8).float() / 255
        for factor in FACTORS:
            corrupt = Pixelate(factor=factor)
            ours8 = to_uint8(corrupt(x, torch.Generator())).numpy().astype(np.int32)
            diff8 = np.abs(ours8 - reference_uint8(x8, factor).astype(np.int32)) / 255
            diff = np.abs(corrupt(x, torch.Generator()).numpy() - reference_float(x.numpy(), factor))
            print(json.dumps({
                "shape": "x".join(map(str, shape)), "factor": factor,
                "uint8_max": round(float(diff8.max()), 4), "uint8_mean": round(float(diff8.mean()), 5),
                "float_max": float(f"{diff.max():.3g}"), "float_mean": float(f"{diff.mean():.3g}"),
            }))


if __name__ == "__main__":
    main()
