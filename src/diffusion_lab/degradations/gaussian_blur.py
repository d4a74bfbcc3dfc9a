"""Gaussian blur with compounding kernels: level t applies t successive blurs (Bansal et al. 2022, section 4.1).

This file imports only torch, diffusers and its sibling `degradation.py`: it travels with saved pipelines.
"""

import torch
from diffusers.configuration_utils import register_to_config

from .degradation import Degradation, apply_axis_operators, image_size

PADDING_MODES = ("circular", "replicate")


def blur_matrix(length: int, kernel_size: int, std: float, padding_mode: str) -> torch.Tensor:
    """(length, length) matrix of a 1-D convolution with a normalised Gaussian kernel, boundary included."""
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / std) ** 2)
    kernel = kernel / kernel.sum()
    sources = torch.arange(length)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    sources = sources % length if padding_mode == "circular" else sources.clamp(0, length - 1)
    return torch.zeros(length, length, dtype=torch.float64).scatter_add_(1, sources, kernel.expand(length, -1).contiguous())


class GaussianBlur(Degradation):
    """D(x, t) = G_t * ... * G_1 * x, where G_s is a Gaussian blur with std kernel_std + kernel_std_growth * (s - 1).

    A 2-D Gaussian blur is separable, so every level's product of blurs is precomputed as one matrix per image
    axis and D applies it to a batch at mixed levels in two matrix products. `circular` padding keeps the image
    mean, so heavy blur tends to the constant mean image (the start of unconditional sampling).

    Args:
        sample_size: image side, or (height, width).
        num_levels: T, the number of successive blurs at the last level.
        kernel_size: odd side of each blur kernel.
        kernel_std: std (pixels) of the first blur.
        kernel_std_growth: increase of the std per level.
        padding_mode: `circular` or `replicate`.
    """

    @register_to_config
    def __init__(self, sample_size=28, num_levels: int = 20, kernel_size: int = 11, kernel_std: float = 1.0,
                 kernel_std_growth: float = 0.2, padding_mode: str = "circular"):
        if num_levels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"num_levels {num_levels} must be positive and kernel_size {kernel_size} a positive odd number, e.g. 20 and 11.")
        if kernel_std <= 0 or kernel_std + kernel_std_growth * (num_levels - 1) <= 0:
            raise ValueError(f"kernel_std {kernel_std} and kernel_std_growth {kernel_std_growth} give a non-positive std: use e.g. 1.0 and 0.2.")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode {padding_mode!r} is unknown: use one of {', '.join(PADDING_MODES)}.")
        stds = [kernel_std + kernel_std_growth * step for step in range(num_levels)]
        self.row_operators, self.column_operators = (
            self._compound(length, kernel_size, stds, padding_mode) for length in image_size(sample_size)
        )

    @staticmethod
    def _compound(length: int, kernel_size: int, stds: list, padding_mode: str) -> torch.Tensor:
        """(T + 1, length, length): level t's product G_t ... G_1 (level 0: identity)."""
        operators = [torch.eye(length, dtype=torch.float64)]
        for std in stds:
            operators.append(blur_matrix(length, kernel_size, std, padding_mode) @ operators[-1])
        return torch.stack(operators).float()

    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return apply_axis_operators(images, self.row_operators, self.column_operators, levels)
