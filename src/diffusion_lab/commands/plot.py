"""`diffusion-lab plot RUN_DIR`: figures of a training run, from its metrics.jsonl and sample grids.

Writes to RUN_DIR/plots (or --output_dir):
- loss_curves.png: the logged training loss per step, and the train / validation loss per epoch;
- metrics.png: each sample-quality metric per epoch, with its real-vs-real value dashed;
- sample_grids.png: the sample grids saved over the epochs (samples/epoch_*.png), side by side.
"""

import argparse

from ..argument_types import CommandParser, path_name
from ..evaluation.plot_run import plot_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=path_name, metavar="RUN_DIR", help="a training run's --output_dir")
    parser.add_argument("--output_dir", type=path_name, default=None, help="where to write the PNGs (default: RUN_DIR/plots)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    for path in plot_run(args.run_dir, args.output_dir):
        print(f"wrote {path}")
