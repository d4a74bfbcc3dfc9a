"""Pixelation (the paper's super-resolution degradation): average over blocks that grow with the level.

This file imports only torch, diffusers and its sibling `degradation.py`: it travels with saved pipelines.
"""

import torch
from diffusers.configuration_utils import register_to_config

from .degradation import Degradation, apply_axis_operators, image_size


def block_average_matrix(length: int, block_size: int) -> torch.Tensor:
    """(length, length) matrix that replaces each entry by the mean of its block [k b, (k + 1) b)."""
    block = torch.arange(length) // block_size
    same_block = (block[:, None] == block[None, :]).double()
    return same_block / same_block.sum(dim=1, keepdim=True)


class Pixelation(Degradation):
    """D(x, t): downsample by averaging over `block_sizes[t - 1]`-pixel blocks, then upsample (nearest).

    Blocks start at pixel 0 (the last one may be smaller), so when each block size divides the next, every level
    averages over unions of the previous level's blocks and D(x, t) moves away from x monotonically.

    Args:
        sample_size: image side, or (height, width).
        block_sizes: block side at levels 1..T, e.g. (2, 4, 8): 28x28 -> 14x14, 7x7, 4x4 blocks.
    """

    @register_to_config
    def __init__(self, sample_size=28, block_sizes: tuple = (2, 4, 8)):
        if len(block_sizes) == 0 or min(block_sizes) < 1:
            raise ValueError(f"block_sizes {list(block_sizes)} must be a non-empty list of positive sizes, e.g. [2, 4, 8].")
        self.row_operators, self.column_operators = (
            torch.stack([torch.eye(length, dtype=torch.float64)] + [block_average_matrix(length, size) for size in block_sizes]).float()
            for length in image_size(sample_size)
        )

    @property
    def num_levels(self) -> int:
        return len(self.config.block_sizes)

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return apply_axis_operators(images, self.row_operators, self.column_operators, levels)

    def start_statistics(self, fully_degraded: torch.Tensor) -> torch.Tensor:
        """The coarsest image, one pixel per block, (N, C * h * w)."""
        block = self.config.block_sizes[-1]
        return fully_degraded[..., ::block, ::block].flatten(1)

    def start_from_statistics(self, statistics: torch.Tensor, channels: int) -> torch.Tensor:
        height, width = image_size(self.config.sample_size)
        block = self.config.block_sizes[-1]
        coarse = statistics.reshape(-1, channels, -(-height // block), -(-width // block))
        return coarse.repeat_interleave(block, dim=-2)[..., :height, :].repeat_interleave(block, dim=-1)[..., :width].contiguous()
