"""Train a DDPM (Ho et al. 2020) and save it as a diffusers pipeline.

    accelerate launch train_ddpm.py                      # coursework CNN on the shipped MNIST
    accelerate launch train_ddpm.py --model unet --use_ema --num_epochs 20
"""

import argparse

from diffusion_lab.cli import run_command
from diffusion_lab.training.arguments import add_training_args
from diffusion_lab.training.ddpm_objective import DDPMObjective, add_ddpm_args
from diffusion_lab.training.loop import run_training


def parse_args(argv):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser)
    add_ddpm_args(parser)
    # The UNet preset is the default: at equal training compute it gives far better digits than the coursework CNN
    # (README, "Which model").
    parser.set_defaults(output_dir="ddpm-mnist", model="unet")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    run_training(args, DDPMObjective.from_args(args))


if __name__ == "__main__":
    run_command(main)
