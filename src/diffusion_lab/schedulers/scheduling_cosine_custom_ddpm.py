"""The seeds' cosine-shaped schedule: beta_t = (beta_end - beta_start) / 2 (1 - cos(pi t / T)) + beta_start."""

import numpy as np

from .scheduling_beta_formula import BetaFormulaDDPMScheduler


class CosineCustomDDPMScheduler(BetaFormulaDDPMScheduler):
    """Betas rising along half a cosine from beta_start (slowly at first) to beta(T) = beta_end.

    Not diffusers' `squaredcos_cap_v2` (Nichol and Dhariwal's cosine alpha-bar, the factory's "cosine"): here the
    *betas* follow a cosine between the two given values.
    """

    @staticmethod
    def beta_formula(t: np.ndarray, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
        return (beta_end - beta_start) / 2 * (1 - np.cos(np.pi * t / num_train_timesteps)) + beta_start
