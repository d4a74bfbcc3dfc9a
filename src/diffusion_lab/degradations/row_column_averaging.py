"""Row or column averaging, the degradation of the seeds' cold-diffusion experiments on MNIST.

This file imports only torch, diffusers and its sibling `degradation.py`: it travels with saved pipelines.
"""

import random

import torch
from diffusers.configuration_utils import register_to_config

from .degradation import Degradation, image_size, levels_mask

ORIENTATIONS = ("rows", "columns")
ORDERS = ("random", "outside_in", "inside_out")


def make_averaging_order(length: int, order: str, seed: int) -> list:
    """The order (0-based) in which the rows or columns are averaged."""
    if order == "outside_in":  # 0, L-1, 1, L-2, ...
        return [index // 2 if index % 2 == 0 else length - 1 - index // 2 for index in range(length)]
    if order == "inside_out":  # m, m+1, m-1, m+2, ... with m = (L-1)//2: 13, 14, 12, 15, ... for L = 28
        middle = (length - 1) // 2
        return [middle + (index + 1) // 2 if index % 2 else middle - index // 2 for index in range(length)]
    # random.Random(seed).random() is the one stream Python guarantees across versions, so the permutation
    # a saved pipeline's seed stands for never changes.
    rng = random.Random(seed)
    keys = [rng.random() for _ in range(length)]
    return sorted(range(length), key=keys.__getitem__)


class RowColumnAveraging(Degradation):
    """D(x, t) replaces each row (or column) of the first t groups, in `order`, by its mean, per channel.

    Args:
        sample_size: image side, or (height, width).
        orientation: `rows` averages along each row (constant rows); `columns` along each column.
        order: `random` (a permutation fixed by `seed`), `outside_in` (1, 28, 2, 27, ... on MNIST) or
            `inside_out` (14, 15, 13, 16, ...).
        group_size: rows averaged per level; num_levels = ceil(rows / group_size): 28 for 1, 7 for 4 on MNIST.
        seed: the seed of the `random` order.
    """

    @register_to_config
    def __init__(self, sample_size=28, orientation: str = "rows", order: str = "random", group_size: int = 1, seed: int = 0):
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation {orientation!r} is unknown: use one of {', '.join(ORIENTATIONS)}.")
        if order not in ORDERS:
            raise ValueError(f"order {order!r} is unknown: use one of {', '.join(ORDERS)}.")
        length = image_size(sample_size)[0 if orientation == "rows" else 1]
        if not 1 <= group_size <= length:
            raise ValueError(f"group_size {group_size} must lie in 1..{length} (the number of {orientation}).")
        self.averaging_order = make_averaging_order(length, order, seed)
        self.groups = [self.averaging_order[start : start + group_size] for start in range(0, length, group_size)]
        # level_of_index[i]: the level from which row (column) i is averaged.
        self.level_of_index = torch.empty(length, dtype=torch.long)
        for level, group in enumerate(self.groups, start=1):
            self.level_of_index[group] = level

    @property
    def num_levels(self) -> int:
        return len(self.groups)

    @property
    def axis(self) -> int:
        """The image axis that indexes the averaged rows (-2) or columns (-1)."""
        return -2 if self.config.orientation == "rows" else -1

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        averaged = levels_mask(self.level_of_index, levels).unsqueeze(1)  # (N, 1, L)
        averaged = averaged.unsqueeze(-1) if self.axis == -2 else averaged.unsqueeze(-2)
        means = images.mean(dim=-1 if self.axis == -2 else -2, keepdim=True)
        return torch.where(averaged, means, images)

    def start_statistics(self, fully_degraded: torch.Tensor) -> torch.Tensor:
        """The row (column) means, (N, C * L)."""
        return fully_degraded.mean(dim=-1 if self.axis == -2 else -2).flatten(1)

    def start_from_statistics(self, statistics: torch.Tensor, channels: int) -> torch.Tensor:
        height, width = image_size(self.config.sample_size)
        if self.axis == -2:
            return statistics.reshape(-1, channels, height, 1).expand(-1, -1, -1, width).contiguous()
        return statistics.reshape(-1, channels, 1, width).expand(-1, -1, height, -1).contiguous()
