"""Noise schedules as diffusers schedulers: the seeds' linear, geometric and cosine-custom, and entropy-scaled DES."""

from .factory import NOISE_SCHEDULES, build_noise_scheduler, portable_scheduler
from .schedule_options import check_schedule_options
from .scheduling_beta_formula import BetaFormulaDDPMScheduler
from .scheduling_cosine_custom_ddpm import CosineCustomDDPMScheduler
from .scheduling_entropy_scaled_ddpm import (
    ENTROPY_MODES,
    EntropyScaledDDPMScheduler,
    histogram_entropy,
)
from .scheduling_geometric_ddpm import GeometricDDPMScheduler
from .scheduling_linear_ddpm import LinearDDPMScheduler

__all__ = [
    "ENTROPY_MODES",
    "NOISE_SCHEDULES",
    "BetaFormulaDDPMScheduler",
    "CosineCustomDDPMScheduler",
    "EntropyScaledDDPMScheduler",
    "GeometricDDPMScheduler",
    "LinearDDPMScheduler",
    "build_noise_scheduler",
    "check_schedule_options",
    "histogram_entropy",
    "portable_scheduler",
]
