"""Train a DDPM (Ho et al. 2020) and save it as a diffusers pipeline.

    accelerate launch train_ddpm.py                      # the device's recipe on the shipped MNIST -> ddpm-mnist/
    accelerate launch train_ddpm.py --model cnn --no-use_ema --optimizer adam --learning_rate 2e-4 \
        --lr_scheduler constant --lr_warmup_steps 0 --snr_gamma 0 --timestep_sampling uniform --cluster_conditioning 0 \
        --autoguidance_scale 1 --output_dir ddpm-cnn                                       # the seeds' recipe
"""

import argparse

from ..argument_types import CommandParser
from ..training.arguments import add_training_args
from ..training.ddpm_objective import DDPMObjective, add_ddpm_args
from ..training.loop import run_training
from ..training.recipes import RECIPE_FLAGS, apply_recipe, training_device_is_cuda


def parse_args(argv):
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser)
    add_ddpm_args(parser)
    # The recipe that reaches real-looking digits soonest (README, "Time to quality"): AdamW after a short warm-up
    # and an EMA of the weights; the model, batch size, learning rate and its schedule, loss weighting and length suit the device
    # (training/recipes.py). The seeds' recipes stay reachable by flags (experiments/).
    parser.set_defaults(
        output_dir="ddpm-mnist", use_ema=True, optimizer="adamw",
        lr_warmup_steps=250, **dict.fromkeys(RECIPE_FLAGS),
    )
    args = parser.parse_args(argv)
    apply_recipe(args, training_device_is_cuda())
    return args


def main(argv):
    args = parse_args(argv)
    run_training(args, DDPMObjective.from_args(args), argv=["train_ddpm.py", *argv])

