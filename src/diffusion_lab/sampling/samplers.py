"""How images are drawn from a DDPM-family pipeline: which sampler, and how many steps by default.

A stock `DDPMPipeline` can swap its scheduler for DDIM or DPM-Solver; the swap keeps the trained betas, so the
same model samples in 20 steps instead of 1,000. A pipeline whose scheduler carries more than the betas (DES: its
noise scale s) keeps its own scheduler and takes fewer, strided ancestral steps instead.
"""

from __future__ import annotations

import contextlib

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

# Each sampler: a scheduler class and its options. The swap keeps the trained betas and settings (from_config).
SAMPLERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmsolver": (DPMSolverMultistepScheduler, {}),
    # DPM-Solver++ (2M) as an SDE solver: fresh noise at every step, as ancestral sampling adds, which corrects
    # part of an imperfect model's error where the ODE solvers carry it to the end. Its steps start at the last
    # training step (trailing: pure noise, as the start is), and x̂₀ is clipped to the data's [-1, 1] as the DDPM
    # sampler does (thresholding at 1).
    "dpmsolver-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "timestep_spacing": "trailing",
                                                    "thresholding": True, "sample_max_value": 1.0}),
}
# Steps when --num_inference_steps is not given; None: every training step (T ancestral steps, usually 1,000).
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpmsolver": 20, "dpmsolver-sde": 20}
# The sampler of sample, evaluate, sample grids and in-training evaluation: SDE-DPM-Solver++ at 20 steps, 1/50 of
# the cost of 1,000 ancestral steps, scores as well as they do on the default model (README, "Samplers"); the ODE
# solvers (DDIM, DPM-Solver) at 20-50 steps score 1.4-1.7x their digit FD.
DEFAULT_SAMPLER = "dpmsolver-sde"
# Strided ancestral steps for pipelines that keep their own scheduler (DES).
OWN_SCHEDULER_STEPS = 100


def is_cold(pipeline) -> bool:
    """Cold-diffusion pipelines restore a degradation instead of denoising with a scheduler."""
    return hasattr(pipeline, "degradation")


def keeps_own_scheduler(pipeline) -> bool:
    """Cold pipelines have no noise scheduler; swapping DES's would drop its noise scale s."""
    return is_cold(pipeline) or hasattr(pipeline.scheduler.config, "noise_scale")


def swap_scheduler(pipeline, name: str) -> None:
    """Replace the sampler, keeping the betas (diffusers' from_config carries trained_betas and beta settings)."""
    scheduler_class, options = SAMPLERS[name]
    pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config, **options)


def use_sampler(pipeline, sampler: str, num_inference_steps: int | None = None) -> int | None:
    """Set up `pipeline` to sample with `sampler` where it can; returns the number of steps to ask it for.

    `num_inference_steps` overrides the sampler's default. For pipelines that keep their own scheduler the sampler
    is ignored and `OWN_SCHEDULER_STEPS` strided ancestral steps are the default (cold pipelines: all levels).
    """
    if is_cold(pipeline):
        return num_inference_steps
    # A default never asks for more steps than the model was trained with (T); a number given is passed on as is.
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    if keeps_own_scheduler(pipeline):
        return num_inference_steps or min(OWN_SCHEDULER_STEPS, num_train_timesteps)
    swap_scheduler(pipeline, sampler)
    return num_inference_steps or min(DEFAULT_STEPS[sampler] or num_train_timesteps, num_train_timesteps)


@contextlib.contextmanager
def autocast_with_fp32_outputs(model, autocast: contextlib.AbstractContextManager):
    """Run `model` under `autocast` (e.g. bf16) while handing the scheduler fp32 outputs: DPM-Solver would otherwise
    carry its whole state in bf16 (it casts each step to the model output's dtype)."""
    handle = model.register_forward_hook(lambda module, inputs, output: type(output)(sample=output.sample.float()))
    try:
        with autocast:
            yield
    finally:
        handle.remove()
