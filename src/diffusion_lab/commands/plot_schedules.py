"""Plot beta_t and alpha-bar_t against t for every noise schedule (DES: its base schedule's betas).

    diffusion-lab plot-schedules --output schedules.png
"""

from __future__ import annotations

import argparse

from ..evaluation.plot_schedules import plot_schedules


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="schedules.png", help="PNG file to write.")
    parser.add_argument("--num_train_timesteps", type=int, default=1000)
    parser.add_argument("--beta_start", type=float, default=1e-4)
    parser.add_argument("--beta_end", type=float, default=0.02)
    args = parser.parse_args(argv)
    plot_schedules(args.output, args.num_train_timesteps, args.beta_start, args.beta_end)
    print(f"wrote {args.output}")

