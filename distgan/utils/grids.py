"""Image grids and PNG files: what the trainer, the tracker and `distgan sample` show people."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distgan.utils.files import atomic_path


def image_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(B,C,H,W) floats in [0,1] -> one uint8 (H',W',C) grid with 2-pixel gaps, C in {1,3}."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    b, c, h, w = x.shape
    ncol = math.ceil(b / nrow)
    pad = 2
    grid = torch.zeros((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), dtype=torch.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        grid[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = x[i]
    return grid.permute(1, 2, 0).numpy()


def save_png(image: np.ndarray, path: Path) -> None:
    """Atomic: a crash never leaves a half-written PNG under the final name."""
    with atomic_path(path) as tmp:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
