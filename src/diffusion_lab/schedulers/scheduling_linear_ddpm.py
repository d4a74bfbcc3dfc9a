"""The coursework's linear schedule: beta_t = beta_start + (t / T) (beta_end - beta_start), t = 1 .. T."""

import numpy as np

from .scheduling_beta_formula import BetaFormulaDDPMScheduler


class LinearDDPMScheduler(BetaFormulaDDPMScheduler):
    """Linear betas from beta(1) = beta_start + (beta_end - beta_start) / T to beta(T) = beta_end.

    diffusers' `beta_schedule="linear"` spaces the same line as beta_start .. beta_end over the T indices instead,
    so its betas are shifted by up to (beta_end - beta_start) / T.
    """

    @staticmethod
    def beta_formula(t: np.ndarray, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
        return beta_start + t / num_train_timesteps * (beta_end - beta_start)
