"""The default recipe of `train_ddpm.py` for the device it runs on.

A 2-core CPU learns most per minute from batches of 128 (README, "Time to quality"). A GPU takes 8x that batch for
1.2x the step time (an H200: 43 ms per step of 1,024 images against 36 ms for 128, issue 22), so its recipe trains
on batches of 1,024 at a higher learning rate, for about 3 minutes of an H100/H200, and writes grids and pipelines
less often. Any of these flags given on the command line wins over the recipe.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Recipe:
    train_batch_size: int
    learning_rate: float
    num_epochs: int
    save_images_epochs: int
    save_model_epochs: int


CPU_RECIPE = Recipe(train_batch_size=128, learning_rate=1e-3, num_epochs=8, save_images_epochs=1, save_model_epochs=1)
# 64 epochs of 58 steps: 3,712 steps, 2.7 minutes at the H200's eager 43 ms per step. Not yet measured for quality:
# the GPU time-to-quality run (benchmarks/gpu_suite.sh bench) is what checks it.
CUDA_RECIPE = Recipe(train_batch_size=1024, learning_rate=2e-3, num_epochs=64, save_images_epochs=8, save_model_epochs=8)
RECIPE_FLAGS = tuple(asdict(CPU_RECIPE))


def training_device_is_cuda() -> bool:
    """Where a run will train: CUDA when torch sees a GPU and the launcher did not ask for the CPU."""
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")


def apply_recipe(args: argparse.Namespace, cuda: bool) -> None:
    """Fill the recipe's flags that are still None (not given) from the device's recipe; `args.recipe` names it."""
    recipe = CUDA_RECIPE if cuda else CPU_RECIPE
    for name, value in asdict(recipe).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.recipe = "cuda" if cuda else "cpu"


def describe_recipe(args: argparse.Namespace) -> str:
    """The recipe's part of the run's first line."""
    length = "" if args.max_train_steps else f" and {args.num_epochs} epochs"  # --max_train_steps sets the length
    return f"the {args.recipe} recipe's learning rate {args.learning_rate:g}{length} (flags given win)"
