"""Row or column averaging, the degradation of the seeds' cold-diffusion experiments on MNIST.

This file imports only torch, diffusers and its sibling `degradation.py`: it travels with saved pipelines.
"""

import random

import torch
from diffusers.configuration_utils import register_to_config

from .degradation import Degradation, image_size, levels_mask

ORIENTATIONS = ("rows", "columns")
ORDERS = ("random", "outside_in", "inside_out")
# band: the cold-diffusion report's grouping, each group of adjacent rows becomes one band with one value;
# separate: each row of a group keeps its own mean, the group only sets the level at which its rows are averaged.
GROUP_MODES = ("band", "separate")


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
    """D(x, t) averages the first t groups of rows (or columns), in `order`, per channel.

    Args:
        sample_size: image side, or (height, width).
        orientation: `rows` averages along each row (constant rows); `columns` along each column.
        order: `random` (a permutation fixed by `seed`), `outside_in` (1, 28, 2, 27, ... on MNIST) or
            `inside_out` (14, 15, 13, 16, ...): the order of the rows, or with `group_mode="band"` of the bands.
        group_size: rows per group; num_levels = ceil(rows / group_size): 28 for 1, 7 for 4 on MNIST.
        seed: the seed of the `random` order.
        group_mode: `band` (the cold-diffusion report's): rows k*g .. k*g+g-1 form band k, averaged together into
            one value, and the bands are averaged in `order`; a fully degraded image has ceil(rows / g) distinct
            row values (7 on MNIST with g = 4). `separate`: the rows are ordered one by one and taken g at a time,
            each keeping its own mean (28 distinct row values whatever g). Both are the same for group_size 1.
    """

    @register_to_config
    def __init__(self, sample_size=28, orientation: str = "rows", order: str = "random", group_size: int = 1, seed: int = 0,
                 group_mode: str = "band"):
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation {orientation!r} is unknown: use one of {', '.join(ORIENTATIONS)}.")
        if order not in ORDERS:
            raise ValueError(f"order {order!r} is unknown: use one of {', '.join(ORDERS)}.")
        if group_mode not in GROUP_MODES:
            raise ValueError(f"group_mode {group_mode!r} is unknown: use one of {', '.join(GROUP_MODES)}.")
        length = image_size(sample_size)[0 if orientation == "rows" else 1]
        if not 1 <= group_size <= length:
            raise ValueError(f"group_size {group_size} must lie in 1..{length} (the number of {orientation}).")
        if group_mode == "band":
            bands = [list(range(start, min(start + group_size, length))) for start in range(0, length, group_size)]
            self.averaging_order = make_averaging_order(len(bands), order, seed)  # the order of the bands
            self.groups = [bands[band] for band in self.averaging_order]
        else:
            self.averaging_order = make_averaging_order(length, order, seed)
            self.groups = [self.averaging_order[start : start + group_size] for start in range(0, length, group_size)]
        # level_of_index[i]: the level from which row (column) i is averaged (its group is groups[level - 1]).
        self.level_of_index = torch.empty(length, dtype=torch.long)
        for level, group in enumerate(self.groups, start=1):
            self.level_of_index[group] = level
        self.group_lengths = torch.tensor([len(group) for group in self.groups])

    @property
    def num_levels(self) -> int:
        return len(self.groups)

    @property
    def axis(self) -> int:
        """The image axis that indexes the averaged rows (-2) or columns (-1)."""
        return -2 if self.config.orientation == "rows" else -1

    @property
    def is_banded(self) -> bool:
        return self.config.group_mode == "band" and self.config.group_size > 1

    def _line_means(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, L): each row's (column's) mean, or in band mode its band's mean."""
        means = images.mean(dim=-1 if self.axis == -2 else -2)
        if not self.is_banded:
            return means
        return self._band_means(means)[..., self.level_of_index.to(images.device) - 1]

    def _band_means(self, line_means: torch.Tensor) -> torch.Tensor:
        """(N, C, num_levels) band means, in level order, from the line means (every line has the same length)."""
        band = self.level_of_index.to(line_means.device) - 1
        sums = line_means.new_zeros(*line_means.shape[:-1], self.num_levels).index_add_(-1, band, line_means)
        return sums / self.group_lengths.to(line_means)

    def _expand(self, line_values: torch.Tensor) -> torch.Tensor:
        """(N, C, L) -> (N, C, H, 1) or (N, C, 1, W), broadcastable over the image."""
        return line_values.unsqueeze(-1) if self.axis == -2 else line_values.unsqueeze(-2)

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        averaged = self._expand(levels_mask(self.level_of_index, levels).unsqueeze(1))  # (N, 1, L) -> image-shaped
        return torch.where(averaged, self._expand(self._line_means(images)), images)

    def start_statistics(self, fully_degraded: torch.Tensor) -> torch.Tensor:
        """The row (column) means, (N, C * L); in band mode the band means, (N, C * num_levels)."""
        means = fully_degraded.mean(dim=-1 if self.axis == -2 else -2)
        return (self._band_means(means) if self.is_banded else means).flatten(1)

    def start_from_statistics(self, statistics: torch.Tensor, channels: int) -> torch.Tensor:
        height, width = image_size(self.config.sample_size)
        values = statistics.reshape(len(statistics), channels, -1)
        if self.is_banded:
            values = values[..., self.level_of_index.to(values.device) - 1]
        return self._expand(values).expand(-1, -1, height, width).contiguous()
