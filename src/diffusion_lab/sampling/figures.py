"""Figures of generated images: a grid, a grid with one row per class, and cold diffusion's four columns."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """A PIL grid of images given in [-1, 1], shape (N, C, H, W)."""
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(channels, rows * (height + 2) + 2, columns * (width + 2) + 2, dtype=torch.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = 2 + row * (height + 2), 2 + column * (width + 2)
        grid[:, top : top + height, left : left + width] = pixels[index]
    array = grid.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")


def uint8_grid(images: np.ndarray, columns: int | None = None) -> Image.Image:
    """`image_grid` of uint8 images (N, H, W, C), as `sample` writes them."""
    return image_grid(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1, columns)


def class_grid(images: np.ndarray, per_class: int, max_columns: int = 16) -> Image.Image:
    """uint8 images (N, H, W, C) drawn `per_class` at a time, one class after another: one row per class (in the
    order drawn), its first `max_columns` images."""
    columns = min(per_class, max_columns)
    rows = [images[start : start + columns] for start in range(0, len(images), per_class)]
    return uint8_grid(np.concatenate(rows), columns)


def four_columns(output, rows: int) -> Image.Image:
    """The seeds' figure of a cold-diffusion restoration (a `ColdDiffusionPipelineOutput` with output_type "pt"):
    for each of the first `rows` images, original, degraded (level T), one-step and iterative restoration."""
    columns = torch.stack([output.originals, output.degraded, output.direct, output.images], dim=1)[:rows]
    return image_grid(columns.flatten(0, 1).cpu() * 2 - 1, columns=4)
