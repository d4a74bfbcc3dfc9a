"""Train a cold-diffusion restorer (Bansal et al. 2022) and save it as a diffusers pipeline.

    accelerate launch train_cold.py                                   # row averaging, coursework CNN, MNIST
    accelerate launch train_cold.py --degradation columns --order outside_in --group_size 4
    accelerate launch train_cold.py --degradation blur --noise 0.01 --loss l1
"""

import argparse

from ..argument_types import CommandParser
from ..training.arguments import add_training_args
from ..training.cold_objective import ColdObjective, add_cold_args
from ..training.loop import run_training


def parse_args(argv):
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser)
    add_cold_args(parser)
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = f"cold-{args.degradation}-mnist"
    return args


def main(argv):
    args = parse_args(argv)
    run_training(args, ColdObjective.from_args(args), argv=["train_cold.py", *argv])

