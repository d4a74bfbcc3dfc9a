"""DDPM with betas given by a closed-form formula beta(t): the shared base of the seeds' schedules.

Indexing convention, shared by every schedule in this package: t runs from 1 to T as in the coursework's
formulas, and diffusers' timestep index i = 0 .. T-1 stands for t = i + 1. So `betas[i] = beta(i + 1)`, the first
beta is beta(1) (slightly above beta_start for the linear schedule) and the last is beta(T) = beta_end exactly.
The coursework's linear schedule gives the same betas for t = 1 .. T; it also keeps a factor (1 - beta_0) =
(1 - beta_start) in every alpha-bar and never trains at t = T, both negligible at beta_start = 1e-4. The network
receives the index i (0 .. T-1), like every diffusers scheduler.

All the DDPM mathematics (add_noise, step, set_timesteps, variance types, clipping) is diffusers'
`DDPMScheduler`; a subclass only states its formula. To load a pipeline with nothing but diffusers, save
`portable_scheduler(scheduler)` instead, which records the betas as `trained_betas` of a stock DDPMScheduler.
"""

from __future__ import annotations

import numpy as np
from diffusers import DDPMScheduler
from diffusers.configuration_utils import register_to_config

from .schedule_options import check_schedule_options


class BetaFormulaDDPMScheduler(DDPMScheduler):
    """diffusers' `DDPMScheduler` on the betas of `beta_formula`; subclasses define only the formula.

    Args: as `DDPMScheduler`, less `beta_schedule`, `trained_betas` and `rescale_betas_zero_snr` (the formula
    replaces them); `variance_type` is `fixed_small` or `fixed_large`.
    """

    # Our __init__ registers its own arguments, then DDPMScheduler's registers its arguments over them: these three
    # stay out of the config, which they would only mislead (T floats of betas, a `beta_schedule="linear"`).
    ignore_for_config = ["trained_betas", "beta_schedule", "rescale_betas_zero_snr"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        check_schedule_options(num_train_timesteps, beta_start, beta_end, prediction_type, variance_type)
        t = np.arange(1, num_train_timesteps + 1, dtype=np.float64)
        betas = self.beta_formula(t, num_train_timesteps, beta_start, beta_end)
        # Every option is passed on, even beta_start and beta_end that trained_betas overrides: the parent registers
        # the config again, and an option left out would be recorded at its default.
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            trained_betas=betas,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
        )

    @staticmethod
    def beta_formula(t: np.ndarray, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
        """beta(t) for t = 1 .. T (float64)."""
        raise NotImplementedError
