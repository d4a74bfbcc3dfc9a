"""Noise schedulers by name, for the trainers, and their diffusers-only (portable) form for saved pipelines."""

from __future__ import annotations

import inspect

from diffusers import DDPMScheduler

from .schedule_options import check_schedule_options
from .scheduling_cosine_custom_ddpm import CosineCustomDDPMScheduler
from .scheduling_entropy_scaled_ddpm import ENTROPY_MODES, EntropyScaledDDPMScheduler
from .scheduling_geometric_ddpm import GeometricDDPMScheduler
from .scheduling_linear_ddpm import LinearDDPMScheduler

FORMULA_SCHEDULERS = {
    "linear": LinearDDPMScheduler,
    "geometric": GeometricDDPMScheduler,
    "cosine_custom": CosineCustomDDPMScheduler,
}
# Our names for diffusers' own beta schedules.
DIFFUSERS_BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid", "scaled_linear": "scaled_linear"}
NOISE_SCHEDULES = (*FORMULA_SCHEDULERS, *DIFFUSERS_BETA_SCHEDULES, "entropy_scaled")


def build_noise_scheduler(
    noise_schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    prediction_type: str,
    variance_type: str = "fixed_small",
    *,
    des_entropy_mode: str = "batch",
    des_base_schedule: str = "linear",
) -> DDPMScheduler:
    """The scheduler named `noise_schedule` (one of NOISE_SCHEDULES); every one is a DDPMScheduler subclass.

    "entropy_scaled" scales the noise of the `des_base_schedule` betas by s = sigmoid(pixel entropy), measured per
    batch or per image (`des_entropy_mode`). Values no schedule can use raise ValueError.
    """
    check_schedule_options(num_train_timesteps, beta_start, beta_end, prediction_type, variance_type)
    options = dict(
        num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
        prediction_type=prediction_type, variance_type=variance_type,
    )
    if noise_schedule in FORMULA_SCHEDULERS:
        return FORMULA_SCHEDULERS[noise_schedule](**options)
    if noise_schedule in DIFFUSERS_BETA_SCHEDULES:
        return DDPMScheduler(beta_schedule=DIFFUSERS_BETA_SCHEDULES[noise_schedule], **options)
    if noise_schedule == "entropy_scaled":
        if des_base_schedule == "entropy_scaled" or des_base_schedule not in NOISE_SCHEDULES:
            bases = ", ".join(name for name in NOISE_SCHEDULES if name != "entropy_scaled")
            raise ValueError(f"des_base_schedule={des_base_schedule!r} is not a base schedule: use one of {bases}.")
        if des_entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"des_entropy_mode={des_entropy_mode!r} is unknown: use 'batch' (one s per batch) or 'image' (one per image).")
        base = build_noise_scheduler(des_base_schedule, **options)
        return EntropyScaledDDPMScheduler(trained_betas=base.betas.tolist(), entropy_mode=des_entropy_mode, **options)
    raise ValueError(f"noise_schedule={noise_schedule!r} is unknown: use one of {', '.join(NOISE_SCHEDULES)}.")


def portable_scheduler(scheduler: DDPMScheduler) -> DDPMScheduler:
    """A stock DDPMScheduler with the same betas and options, loadable with nothing but diffusers.

    The betas are recorded as `trained_betas` (a plain list, exact for float32), even for diffusers' own beta
    schedules: DDIMScheduler.from_config and DPMSolverMultistepScheduler.from_config of its config then reproduce
    them for every schedule (DDIMScheduler has no "sigmoid" beta_schedule, for one). Entropy-scaled schedulers cannot be
    made portable this way (stock schedulers know no noise scale s): save them with EntropyScaledDDPMPipeline.
    """
    if isinstance(scheduler, EntropyScaledDDPMScheduler):
        raise ValueError("an entropy-scaled scheduler needs its own class to sample (noise scale s): save it with EntropyScaledDDPMPipeline and its remote code instead.")
    ddpm_options = set(inspect.signature(DDPMScheduler.__init__).parameters) - {"self", "trained_betas", "beta_schedule"}
    options = {name: value for name, value in scheduler.config.items() if name in ddpm_options}
    return DDPMScheduler(trained_betas=scheduler.betas.tolist(), **options)
