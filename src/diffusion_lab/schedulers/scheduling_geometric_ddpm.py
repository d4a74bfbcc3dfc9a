"""The seeds' geometric schedule: beta_t = beta_start (beta_end / beta_start)^(t / T), t = 1 .. T."""

import numpy as np

from .scheduling_beta_formula import BetaFormulaDDPMScheduler


class GeometricDDPMScheduler(BetaFormulaDDPMScheduler):
    """Betas growing by the constant factor (beta_end / beta_start)^(1 / T) per step, ending at beta(T) = beta_end."""

    @staticmethod
    def beta_formula(t: np.ndarray, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
        return beta_start * (beta_end / beta_start) ** (t / num_train_timesteps)
