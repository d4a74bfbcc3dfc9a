"""Plot beta_t and alpha-bar_t against t for every noise schedule (DES: its base schedule's betas).

    diffusion-lab plot-schedules --output schedules.png
"""

from __future__ import annotations

import argparse

from ..argument_types import CommandParser, at_least_two, open_unit_interval, png_path
from ..evaluation.plot_schedules import plot_schedules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=png_path, default="schedules.png", help="PNG file to write.")
    parser.add_argument("--num_train_timesteps", type=at_least_two, default=1000)
    parser.add_argument("--beta_start", type=open_unit_interval, default=1e-4)
    parser.add_argument("--beta_end", type=open_unit_interval, default=0.02)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plot_schedules(args.output, args.num_train_timesteps, args.beta_start, args.beta_end)
    print(f"wrote {args.output}")

