"""The base class of cold-diffusion degradations D(x, t) (Bansal et al. 2022, "Cold Diffusion").

This file imports only torch and diffusers: it travels with saved pipelines (see `pipelines/export.py`).
"""

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin


def image_size(sample_size) -> tuple:
    """`sample_size` as (height, width); an int means a square image."""
    return (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)


class Degradation(SchedulerMixin, ConfigMixin):
    """A deterministic degradation D(x, t) with levels t = 0 (D(x, 0) = x) to `num_levels` (fully degraded).

    Degradations hold only a configuration, like schedulers (they play the role of the forward process), so a
    pipeline saves them as `degradation/degradation_config.json`. Subclasses set `num_levels` and implement
    `_degrade`; they may override the statistics that describe a fully degraded image (default: channel means),
    from which unconditional sampling starts.
    """

    config_name = "degradation_config.json"

    @property
    def num_levels(self) -> int:
        raise NotImplementedError

    def _degrade(self, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def degrade(self, images: torch.Tensor, levels) -> torch.Tensor:
        """D(images, levels). `images` (N, C, H, W); `levels` an int or N ints in 0..num_levels."""
        if images.ndim != 4 or images.shape[-2:] != image_size(self.config.sample_size):
            raise ValueError(
                f"images of shape {tuple(images.shape)} do not match this degradation (N, C, "
                f"{' x '.join(map(str, image_size(self.config.sample_size)))}): build it with sample_size=(H, W) of your data."
            )
        levels = torch.as_tensor(levels, device=images.device).reshape(-1).expand(images.shape[0])
        if levels.is_floating_point() or levels.min() < 0 or levels.max() > self.num_levels:
            raise ValueError(f"levels must be integers in 0..{self.num_levels}; got {levels.tolist()}.")
        return self._degrade(images, levels)

    def start_statistics(self, fully_degraded: torch.Tensor) -> torch.Tensor:
        """(N, F) numbers that describe fully degraded images: here the channel means (N, C)."""
        return fully_degraded.mean(dim=(-2, -1))

    def start_from_statistics(self, statistics: torch.Tensor, channels: int) -> torch.Tensor:
        """Fully degraded images (N, channels, H, W) from `start_statistics`: here constant images."""
        height, width = image_size(self.config.sample_size)
        return statistics.reshape(-1, channels, 1, 1).expand(-1, -1, height, width).contiguous()


def levels_mask(level_of_element: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(N, *shape) booleans: which elements level `levels[n]` has degraded, given the level that degrades each."""
    level_of_element = level_of_element.to(levels.device)
    return level_of_element[None] <= levels.reshape(-1, *([1] * level_of_element.ndim))


def apply_axis_operators(images: torch.Tensor, row_operators: torch.Tensor, column_operators: torch.Tensor, levels: torch.Tensor):
    """A_t x B_t^T per image, for linear degradations that act on rows and columns separately.

    `row_operators` (T + 1, H, H) and `column_operators` (T + 1, W, W) hold A_t and B_t for every level t.
    """
    rows = row_operators.to(images)[levels].unsqueeze(1)  # (N, 1, H, H)
    columns = column_operators.to(images)[levels].unsqueeze(1)  # (N, 1, W, W)
    return rows @ images @ columns.transpose(-1, -2)
