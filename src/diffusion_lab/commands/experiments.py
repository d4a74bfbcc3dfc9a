"""`diffusion-lab experiments`: train and evaluate every variant in `experiments/`, and tabulate them.

    diffusion-lab experiments --budget small                  # the whole table on a CPU
    diffusion-lab experiments --budget tiny --only linear unet # a smoke run
    diffusion-lab experiments --budget medium --launcher "accelerate launch"  # on a GPU, minutes
    diffusion-lab experiments --budget full --launcher "accelerate launch"    # on a GPU, hours

Each `experiments/<variant>.json` names a training script and its flags, and the samplings to evaluate (cold
diffusion: Algorithm 1 or 2, conditional or unconditional; these are sampling options of one trained model).
The runner (diffusion_lab.experiments) trains each variant in a subprocess (`diffusion-lab train-ddpm` /
`train-cold`, through --launcher), then samples, scores and plots it with the library, as `sample`, `evaluate`
and `plot` do. Every variant gets
the same budget (optimizer steps, batch size, training images) and the same protocol (number of samples, sampler
and its steps, seed); a config may scale its steps (`train_steps_factor`) for a compute-matched comparison.

Several variants share one device at once when that finishes the table sooner: `--concurrency auto` (the
default on CUDA) measures it first (`diffusion_lab.experiments.concurrency`: aggregate training steps/s of 1, 2, 4, ...
concurrent runs of the model most variants use, recorded in `concurrency.json` and reused on resume), then runs
the variants longest first, each in a runner subprocess of its own, as many at once as was chosen.

Resume-safe: a finished training (`<run>/experiment_train.json`) or evaluation (`<row>/row.json`) is not redone;
an interrupted training continues from its latest checkpoint.

Writes to `--output_dir` (default `runs/experiments/<budget>`): `runs/<variant>/` (pipelines, logs),
`rows/<row>/` (samples, evaluation.json, row.json), `figures/` (exp_<row>.png sample grids, loss_<variant>.png,
schedules.png) and `results.md` / `results.csv`.
"""


from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ..argument_types import CommandParser, path, positive_int
from ..experiments.runner import ExperimentRunner
from ..experiments.variants import BUDGETS, load_variants


def parse_args(argv) -> argparse.Namespace:
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    parser.add_argument("--only", nargs="+", default=None, help="Run only these variants (config file stems).")
    parser.add_argument("--configs_dir", type=path, default=Path("experiments"))
    parser.add_argument("--output_dir", type=path, default=None, help="Default: runs/experiments/<budget>.")
    parser.add_argument("--launcher", default="python", help='How to start the trainings, e.g. "accelerate launch".')
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="For sampling and evaluation.")
    parser.add_argument("--list", action="store_true", help="List the variants and exit.")
    parser.add_argument(
        "--collect", action="store_true",
        help="Only rebuild the table and figures from the rows already finished (e.g. after running disjoint --only "
        "sets in parallel into one --output_dir); nothing is trained or sampled.",
    )
    parser.add_argument(
        "--concurrency", default="auto" if torch.cuda.is_available() else "1",
        help="Variants run at once: a number, or auto (the default on CUDA; 1 elsewhere) to measure how many runs the "
             "device takes before it is busy (see diffusion_lab.experiments.concurrency).",
    )
    parser.add_argument("--max_concurrency", type=positive_int, default=8, help="The most variants --concurrency auto tries at once.")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.concurrency != "auto" and not (args.concurrency.isdigit() and int(args.concurrency) >= 1):
        parser.error(f"--concurrency {args.concurrency}: pass a positive number or auto")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    variants = load_variants(args.configs_dir, args.only)
    if args.list:
        for variant in variants:
            print(f"{variant.name:24s} {variant.script} {shlex.join(variant.flags)}  ({len(variant.samplings)} sampling(s))")
        return []
    launcher = [sys.executable] if args.launcher == "python" else shlex.split(args.launcher)
    runner = ExperimentRunner(args.budget, args.output_dir or Path("runs/experiments") / args.budget, launcher, args.device)
    processes = 1 if args.collect or len(variants) == 1 else runner.concurrency(args.concurrency, variants, args.max_concurrency)
    if processes > 1:
        runner_flags = ["--budget", args.budget, "--configs_dir", str(args.configs_dir.resolve()), "--output_dir",
                        str(runner.output_dir.resolve()), "--launcher", args.launcher, "--device", args.device]
        runner.run_concurrently(variants, processes, runner_flags)
    rows = runner.run(variants, collect_only=args.collect or processes > 1)
    print(f"wrote {runner.output_dir / 'results.md'} and results.csv")
    return rows

