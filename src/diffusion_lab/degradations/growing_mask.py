"""A mask that grows from the centre outwards, ring by ring (inpainting as a degradation).

This file imports only torch, diffusers and its sibling `degradation.py`: it travels with saved pipelines.
"""

import torch
from diffusers.configuration_utils import register_to_config

from .degradation import Degradation, image_size, levels_mask


class GrowingMask(Degradation):
    """D(x, t) sets the innermost t * rings_per_level rings of pixels to `fill_value`; D(x, T) is all fill.

    Ring r holds the pixels at distance r from the nearest border, so the mask is a centred square
    (a rectangle for non-square images) that grows by one pixel on every side per ring.

    Args:
        sample_size: image side, or (height, width).
        rings_per_level: rings masked per level; num_levels = ceil(rings / rings_per_level), 14 for MNIST.
        fill_value: value of masked pixels in [-1, 1] (0: mid-grey, -1: the MNIST background).
    """

    @register_to_config
    def __init__(self, sample_size=28, rings_per_level: int = 1, fill_value: float = 0.0):
        height, width = image_size(sample_size)
        rows, columns = torch.arange(height)[:, None], torch.arange(width)[None, :]
        ring = torch.minimum(torch.minimum(rows, height - 1 - rows), torch.minimum(columns, width - 1 - columns))
        num_rings = int(ring.max()) + 1
        if not 1 <= rings_per_level <= num_rings:
            raise ValueError(f"rings_per_level {rings_per_level} must lie in 1..{num_rings} for {height}x{width} images.")
        if not -1 <= fill_value <= 1:  # also refuses nan
            raise ValueError(f"fill_value {fill_value} must lie in [-1, 1], the pixel range (-1: the MNIST background).")
        # Innermost ring first: ring num_rings - 1 is masked from level 1.
        self.level_of_pixel = torch.div(num_rings - ring + rings_per_level - 1, rings_per_level, rounding_mode="floor")

    @property
    def num_levels(self) -> int:
        return int(self.level_of_pixel.max())

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        masked = levels_mask(self.level_of_pixel, levels).unsqueeze(1)  # (N, 1, H, W)
        return images.masked_fill(masked, self.config.fill_value)
