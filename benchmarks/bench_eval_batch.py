"""Does a larger evaluation batch pay? Forward cost per image (no grad) at several batch sizes, interleaved.

    python benchmarks/bench_eval_batch.py --models cnn unet --batch_sizes 8 16 32 64 128 256

Sampling and the validation loss are forward passes, so this is what --eval_batch_size changes. Each round runs
every batch size in turn on about --images images, so that load from other processes hits all sizes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "unet"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--images", type=int, default=256, help="Images per batch size per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


@torch.no_grad()
def bench_model(model_name: str, args) -> dict:
    from diffusion_lab.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, 28, 1, 1000).eval()
    inputs = {size: torch.randn(size, 1, 28, 28) for size in args.batch_sizes}
    timestep = torch.tensor(500)
    for size in args.batch_sizes:  # warm-up: oneDNN builds its kernels per shape
        model(inputs[size], timestep)
    ms_per_image = {size: [] for size in args.batch_sizes}
    for _ in range(args.rounds):
        for size in args.batch_sizes:
            calls = max(1, args.images // size)
            start = time.perf_counter()
            for _ in range(calls):
                model(inputs[size], timestep)
            ms_per_image[size].append(1000 * (time.perf_counter() - start) / (calls * size))
    return {str(size): {"ms_per_image": round(statistics.median(times), 3), "rounds": [round(t, 3) for t in times]}
            for size, times in ms_per_image.items()}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "config": {k: v for k, v in vars(args).items() if k != "json"},
              "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    report["models"] = {model_name: bench_model(model_name, args) for model_name in args.models}
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report))
        return
    print(f"forward ms per image, threads {args.threads}; load average {report['loadavg_start']} -> {report['loadavg_end']}")
    for model_name, result in report["models"].items():
        print(f"{model_name:5s} " + "  ".join(f"batch {size}: {figures['ms_per_image']:.2f}" for size, figures in result.items()))


if __name__ == "__main__":
    main()
