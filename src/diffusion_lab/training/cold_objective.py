"""Cold-diffusion restoration (Bansal et al. 2022) as an objective for the shared training loop.

Each step degrades clean images to uniformly drawn levels t in 1..T, x_t = D(x0, t), and the network R(x_t, t)
learns to predict x0. Fully degraded training images are summarised along the way (their start statistics,
e.g. row means), and a Gaussian mixture fitted to them becomes the pipeline's start distribution.
"""

from __future__ import annotations

import argparse

import torch

from ..argument_types import Number, integer, non_negative_float, positive_int, real
from ..degradations import (
    DEGRADATIONS,
    Degradation,
    DegradationOptions,
    build_degradation,
)
from ..pipelines import ColdDiffusionPipeline, GaussianMixture
from .arguments import ArgumentError
from .objective import LOSSES, Objective

pixel_value = Number(float, -1.0, 1.0)  # the pixel range the models see


def add_cold_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cold diffusion")
    group.add_argument("--degradation", choices=tuple(DEGRADATIONS), default="rows")
    group.add_argument("--order", choices=("random", "outside_in", "inside_out"), default=None, help="rows/columns: averaging order (default random).")
    group.add_argument("--group_size", type=positive_int, default=None, help="rows/columns: rows averaged per level (default 1: 28 levels on MNIST).")
    group.add_argument("--group_mode", choices=("band", "separate"), default=None,
                       help="rows/columns with --group_size > 1: band (default, the cold-diffusion report's) averages each "
                       "group of adjacent rows into one value; separate keeps each row's own mean.")
    group.add_argument("--order_seed", type=integer, default=None, help="rows/columns: seed of the random order (default 0).")
    group.add_argument("--num_levels", type=positive_int, default=None, help="blur: number of successive blurs T (default 20).")
    group.add_argument("--kernel_size", type=positive_int, default=None, help="blur: odd kernel side (default 11).")
    group.add_argument("--kernel_std", type=real, default=None, help="blur: std of the first blur in pixels (default 1.0).")
    group.add_argument("--kernel_std_growth", type=real, default=None, help="blur: std increase per level (default 0.2).")
    group.add_argument("--padding_mode", choices=("circular", "replicate"), default=None, help="blur: boundary (default circular).")
    group.add_argument("--block_sizes", type=positive_int, nargs="+", default=None, help="pixelate: block side per level (default 2 4 8).")
    group.add_argument("--rings_per_level", type=positive_int, default=None, help="mask: pixel rings masked per level (default 1).")
    group.add_argument("--fill_value", type=pixel_value, default=None, help="mask: value of masked pixels in [-1, 1] (default 0).")
    group.add_argument("--start_components", type=positive_int, default=10, help="Gaussians in the fitted start distribution.")
    group.add_argument("--start_samples", type=positive_int, default=20000, help="Fully degraded training images the start distribution is fitted to.")
    group.add_argument("--noise", type=non_negative_float, default=0.0, help="Std of noise added to the start of sample grids (breaks symmetry, e.g. 0.01 for blur).")


def build_degradation_from_args(args: argparse.Namespace) -> Degradation:
    """The `--degradation` with its option flags (`DegradationOptions`); a flag set for a degradation that does not
    take that option (the registry's `DEGRADATIONS[name].options`) is refused."""
    options = DegradationOptions.from_args(args)
    refused = DEGRADATIONS[args.degradation].refused(options)
    if refused:
        raise ArgumentError(
            f"{DegradationOptions.flag(refused[0])} does not apply to --degradation {args.degradation}: drop it or pick a degradation that uses it."
        )
    try:
        return build_degradation(args.degradation, options, sample_size=args.resolution or 28)
    except ValueError as error:
        raise ArgumentError(f"--degradation {args.degradation}: {error}") from None


class ColdObjective(Objective):
    """Predict x0 from x_t = D(x0, t), t uniform in 1..T; collect fully degraded statistics for the start."""

    default_loss = "l1"  # the paper's; the seeds used MSE

    def __init__(self, degradation: Degradation, loss: str = "l1", start_components: int = 10,
                 start_samples: int = 20000, noise: float = 0.0):
        self.degradation = degradation
        self.loss_fn = LOSSES[loss]
        self.start_components = start_components
        self.start_samples = start_samples
        self.noise = noise
        self.start_statistics: list[torch.Tensor] = []
        self._start_distribution: GaussianMixture | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ColdObjective":
        if args.start_samples < args.start_components:
            raise ArgumentError(f"--start_samples {args.start_samples} must be at least --start_components {args.start_components}.")
        return cls(build_degradation_from_args(args), args.loss or cls.default_loss, args.start_components, args.start_samples, args.noise)

    @property
    def num_train_timesteps(self) -> int:
        return self.degradation.num_levels

    def loss(self, model, clean: torch.Tensor, generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss on one batch; `generator` (on CPU) fixes the levels (and dropped labels), e.g. for validation;
        `class_labels` for class-conditional runs."""
        # Drawn on the device in training (no host work or transfer in a step), on the generator's CPU otherwise.
        levels = torch.randint(1, self.num_train_timesteps + 1, (clean.shape[0],), generator=generator,
                               device=clean.device if generator is None else "cpu").to(clean.device)
        if class_labels is None:
            prediction = model(self.degradation.degrade(clean, levels), levels).sample
        else:
            labels = self.drop_labels(class_labels, generator)
            prediction = model(self.degradation.degrade(clean, levels), levels, class_labels=labels).sample
        if model.training:
            self._collect_start_statistics(clean)
        return self.loss_fn(prediction.float(), clean.float())

    @torch.no_grad()
    def _collect_start_statistics(self, clean: torch.Tensor) -> None:
        collected = sum(len(batch) for batch in self.start_statistics)
        if collected < self.start_samples:
            fully_degraded = self.degradation.degrade(clean[: self.start_samples - collected], self.num_train_timesteps)
            self.start_statistics.append(self.degradation.start_statistics(fully_degraded).float().cpu())
            self._start_distribution = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The start statistics collected so far (a resumed run fits the same start distribution)."""
        return {"start_statistics": torch.cat(self.start_statistics) if self.start_statistics else torch.empty(0)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        statistics = state["start_statistics"]
        self.start_statistics = [statistics] if len(statistics) else []
        self._start_distribution = None

    def start_distribution(self) -> GaussianMixture:
        """The mixture fitted to the statistics collected so far (refitted only when more have arrived)."""
        if self._start_distribution is None:
            statistics = torch.cat(self.start_statistics) if self.start_statistics else torch.empty(0, 0)
            if len(statistics) < self.start_components:
                raise ArgumentError(
                    f"only {len(statistics)} training images were seen to fit the start distribution: train more steps "
                    f"or lower --start_components ({self.start_components})."
                )
            self._start_distribution = GaussianMixture.fit(statistics, self.start_components, generator=torch.Generator().manual_seed(0))
        return self._start_distribution

    def pipeline(self, model, guide=None) -> ColdDiffusionPipeline:
        # No autoguidance for cold diffusion (`autoguidance` stays None): the trainer never passes a guide.
        start_distribution = self.start_distribution().to(model.device)
        return ColdDiffusionPipeline(unet=model, degradation=self.degradation, start_distribution=start_distribution,
                                     class_names=self.class_names)

    def sampling_options(self) -> dict:
        return {"noise": self.noise}
