"""The default recipe of `train_ddpm.py` for the device it runs on.

A 2-core CPU learns most per minute from many small steps: batches of 32, the small UNet (1.6x the steps per minute
of unet_fast, 1.2x again without attention) and min-SNR-5 loss weighting each lowered the digit FD at 5 and 10
minutes of training, measured one at a time (benchmarks/RESULTS.md, sections 8 and 9). A GPU takes 8x a batch of 128 for 1.2x the step time (an H200: 43 ms
per step of 1,024 images against 36 ms for 128, issue 22), so its recipe trains unet_fast on batches of 1,024 at a
higher learning rate, for about 3 minutes of an H100/H200, and writes grids and pipelines less often; the CPU's
changes are unmeasured there, so it keeps the plain loss and no autoguidance. On the CPU the sample grids and the
saved pipeline are autoguided (w = 2, by the run's EMA from a third of its steps: 37 % lower digit FD after 15
minutes, two seeds, section 15). The CPU run is 8 epochs (15,000 steps): autoguided, two seeds reach their best
digit FD at 13,000-15,000 steps and no lower at 17,000-20,000, where the guide stops paying (section 17). Logit-normal
training timesteps lower the FD of its first half hour but not at its end (section 19), so they stay a flag. Any of
these flags given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Recipe:
    model: str
    train_batch_size: int
    learning_rate: float
    num_epochs: int
    save_images_epochs: int
    save_model_epochs: int
    snr_gamma: float  # min-SNR-gamma loss weighting; 0: off
    checkpointing_steps: int
    autoguidance_scale: float  # w of the guide, the run's EMA from a third of its steps; 1: off


# 500 steps of 32 take a minute on 2 cores: a checkpoint (10 MB) every 2,000 steps, about 4 minutes, instead.
CPU_RECIPE = Recipe(model="unet_small", train_batch_size=32, learning_rate=1e-3, num_epochs=8, save_images_epochs=1,
                    save_model_epochs=1, snr_gamma=5.0, checkpointing_steps=2000, autoguidance_scale=2.0)
# 64 epochs of 58 steps: 3,712 steps, 2.7 minutes at the H200's eager 43 ms per step. Not yet measured for quality:
# the GPU time-to-quality run (benchmarks/gpu_suite.sh bench) is what checks it; until then it keeps the plain loss.
CUDA_RECIPE = Recipe(model="unet_fast", train_batch_size=1024, learning_rate=2e-3, num_epochs=64, save_images_epochs=8,
                     save_model_epochs=8, snr_gamma=0.0, checkpointing_steps=500, autoguidance_scale=1.0)
RECIPE_FLAGS = tuple(asdict(CPU_RECIPE))


def training_device_is_cuda() -> bool:
    """Where a run will train: CUDA when torch sees a GPU and the launcher did not ask for the CPU."""
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")


def apply_recipe(args: argparse.Namespace, cuda: bool) -> None:
    """Fill the recipe's flags that are still None (not given) from the device's recipe; `args.recipe` names it."""
    values = asdict(CUDA_RECIPE if cuda else CPU_RECIPE)
    if args.noise_schedule == "entropy_scaled":
        values["snr_gamma"] = 0.0  # its noise level depends on each image: no SNR per timestep to weight by
    if args.noise_schedule == "entropy_scaled" or args.class_conditional:
        values["autoguidance_scale"] = 1.0  # its own pipeline / classifier-free guidance instead
    for name, value in values.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.recipe = "cuda" if cuda else "cpu"


def describe_recipe(args: argparse.Namespace) -> str:
    """The recipe's part of the run's first line."""
    weighting = f", min-SNR-{args.snr_gamma:g} loss weighting" if args.snr_gamma else ""
    guidance = (f", autoguidance w {args.autoguidance_scale:g} by the EMA from {args.autoguidance_guide_fraction:.0%} of the steps"
                if args.autoguidance_scale != 1 else "")
    length = f" and {args.num_epochs} epochs" if not args.max_train_steps else ""  # --max_train_steps sets the length
    return f"the {args.recipe} recipe's learning rate {args.learning_rate:g}{weighting}{guidance}{length} (flags given win)"
