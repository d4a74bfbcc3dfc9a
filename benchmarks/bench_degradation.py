"""Speed of the vectorised row/column averaging D(x, t) against a straightforward loop over images and rows.

    python benchmarks/bench_degradation.py            # 128 x 1 x 28 x 28, every level 0..T in the batch
    python benchmarks/bench_degradation.py --json

The loop is how the seeds implemented D (hours per training run on a V100); it is also the test suite's reference.
"""

import argparse
import json
import time

import torch

from diffusion_lab.degradations import RowColumnAveraging


def degrade_loop(degradation: RowColumnAveraging, images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Reference D(x, t): for each image, replace each row (column) of its first t groups by its mean, or with
    group_mode "band" each group of rows (columns) by the group's mean."""
    degraded = images.clone()
    banded = degradation.config.group_mode == "band"
    for n in range(images.shape[0]):
        for group in degradation.groups[: int(levels[n])]:
            if degradation.config.orientation == "columns":
                degraded[n, :, :, group] = images[n, :, :, group].mean(dim=(-2, -1) if banded else -2, keepdim=True)
            else:
                degraded[n, :, group, :] = images[n, :, group, :].mean(dim=(-2, -1) if banded else -1, keepdim=True)
    return degraded


def best_time_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--orientation", choices=("rows", "columns"), default="rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    args = parser.parse_args()
    torch.set_num_threads(1)

    degradation = RowColumnAveraging(sample_size=28, orientation=args.orientation)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 1, 28, 28, generator=generator) * 2 - 1
    levels = torch.arange(args.batch_size) % (degradation.num_levels + 1)  # every level, 0..T
    torch.testing.assert_close(degradation.degrade(images, levels), degrade_loop(degradation, images, levels))

    vectorised_ms = best_time_ms(lambda: degradation.degrade(images, levels), args.repeats)
    loop_ms = best_time_ms(lambda: degrade_loop(degradation, images, levels), max(1, args.repeats // 4))
    result = {
        "batch": list(images.shape), "levels": f"0..{degradation.num_levels}", "orientation": args.orientation,
        "vectorised_ms": round(vectorised_ms, 4), "loop_ms": round(loop_ms, 2), "speedup": round(loop_ms / vectorised_ms, 1),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"D(x, t) on {result['batch']}, levels {result['levels']} ({args.orientation}), 1 thread, best of runs:")
        print(f"  vectorised {vectorised_ms:.3f} ms   loop {loop_ms:.1f} ms   speed-up {result['speedup']}x")


if __name__ == "__main__":
    main()
