"""The image grids the stages write beside their outputs, each row labelled with what it holds: a class of the
distilled set, the corruption or outlier kind a row of outliers comes from, an OOD set.

torchvision lays the images out (``make_grid``, one row of ``per_row`` images per label); Pillow writes each
label in a margin to the left of its row with its built-in bitmap font, which needs no font file and draws
the same pixels everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

PADDING = 1  # pixels between images, as before the labels
TEXT = (255, 255, 255)  # white labels on the grid's black margin


def labelled_grid(images: torch.Tensor, labels: Sequence[str], per_row: int, path: str | Path) -> None:
    """Write ``images`` (N x C x H x W floats in [0, 1]; N = len(labels) x per_row) as a PNG grid with one
    row per label, the label at the row's left."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    rows = len(labels)
    if rows == 0 or per_row < 1 or images.shape[0] != rows * per_row:
        raise ValueError(f"labelled_grid: {images.shape[0]} images do not fill {rows} rows of {per_row}")
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=per_row, padding=PADDING)  # 3 x H' x W'
    pixels = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    body = Image.fromarray(pixels)  # H x W x 3 uint8: RGB
    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else ImageFont.load_default()
    measure = ImageDraw.Draw(body)
    boxes = [measure.textbbox((0, 0), str(label), font=font) for label in labels]
    margin = max(box[2] - box[0] for box in boxes) + 2 * 3
    page = Image.new("RGB", (margin + body.width, body.height))
    page.paste(body, (margin, 0))
    draw = ImageDraw.Draw(page)
    h = images.shape[-2]
    for i, (label, box) in enumerate(zip(labels, boxes)):
        top = PADDING + i * (h + PADDING)
        draw.text((3, top + (h - (box[3] - box[1])) // 2 - box[1]), str(label), fill=TEXT, font=font)
    page.save(path, format="PNG")
