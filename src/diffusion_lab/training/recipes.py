"""The default recipe of `train_ddpm.py` for the device it runs on.

A 2-core CPU learns most per minute from many small steps: batches of 32, the small UNet (1.6x the steps per minute of
unet_fast, 1.2x again without attention) and min-SNR-5 loss weighting each lowered the digit FD at 5 and 10 minutes of
training, measured one at a time (benchmarks/RESULTS.md, sections 8 and 9). A GPU takes 8x a batch of 128 for 1.2x the
step time (an H200: 43 ms per step of 1,024 images against 36 ms for 128, issue 22), so its recipe trains unet_fast on
batches of 1,024 at a higher learning rate, for about 3 minutes of an H100/H200, and writes grids and pipelines less
often; the CPU's changes are unmeasured there, so it keeps the plain loss and no autoguidance. On the CPU the sample
grids and the saved pipeline are autoguided by the run's EMA from a third of its steps (37 % lower digit FD after 15
minutes, two seeds, section 15); w = 1.5, not the 2 chosen there, since the clusters and logit-normal timesteps: 21
after 15 minutes on both seeds' saved models, against 24 at w = 1.25 and 27 at w = 2 (sections 26-27). It also trains
on 100 k-means clusters of the images as labels (a pipeline that draws them by their sizes, still unconditional) with
logit-normal timesteps: 21.5 against 33.1 after 15 minutes (two seeds), and below or level with the old default at
every mark to 60 minutes (section 22; either alone is worth less, sections 18-21). The CPU run is 8 epochs (15,000
steps): two seeds of the old default and the new one's seed 1 reach their best digit FD at 13,000-15,000 steps and
none lower after (sections 17 and 22). Its learning rate peaks at 2e-3 and follows a cosine over those steps: near the
peak for the first 15 minutes of a slow CPU, where 2e-3 learns faster, and below the old constant 1e-3 from the run's
middle, where 2e-3 hurt (section 9); seed 0 on a Zen 1 EPYC scored 20.4 after 15 minutes and 15.2 after 60, against
21.6-22.5 and 16.1-17.5 for the constant 1e-3 (section 30). On a 2-core CPU with bf16 (a Zen 4 EPYC) the 15,000 steps
take 27-28 minutes: two seeds at 1.04-1.17x the floor after 15 minutes, flat from about 11,000 steps (section 31).
Any of these flags given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Recipe:
    model: str
    train_batch_size: int
    learning_rate: float
    lr_scheduler: str  # diffusers' `get_scheduler` name; a decaying one runs over the run's length
    num_epochs: int
    save_images_epochs: int
    save_model_epochs: int
    snr_gamma: float  # min-SNR-gamma loss weighting; 0: off
    checkpointing_steps: int
    autoguidance_scale: float  # w of the guide, the run's EMA from a third of its steps; 1: off
    timestep_sampling: str  # how training draws its timesteps: uniform or logit_normal
    cluster_conditioning: int  # K k-means clusters of the images to condition on (`recipe_clusters` caps it); 0: off


# 500 steps of 32 take a minute on 2 cores: a checkpoint (10 MB) every 2,000 steps, about 4 minutes, instead.
CPU_RECIPE = Recipe(model="unet_small", train_batch_size=32, learning_rate=2e-3, lr_scheduler="cosine", num_epochs=8,
                    save_images_epochs=1, save_model_epochs=1, snr_gamma=5.0, checkpointing_steps=2000, autoguidance_scale=1.5,
                    timestep_sampling="logit_normal", cluster_conditioning=100)
# 64 epochs of 58 steps: 3,712 steps, 2.7 minutes at the H200's eager 43 ms per step. Not yet measured for quality:
# the GPU time-to-quality run (benchmarks/gpu_suite.sh bench) is what checks it; until then it keeps the plain loss.
CUDA_RECIPE = Recipe(model="unet_fast", train_batch_size=1024, learning_rate=2e-3, lr_scheduler="constant_with_warmup", num_epochs=64,
                     save_images_epochs=8, save_model_epochs=8, snr_gamma=0.0, checkpointing_steps=500, autoguidance_scale=1.0,
                     timestep_sampling="uniform", cluster_conditioning=0)
RECIPE_FLAGS = tuple(asdict(CPU_RECIPE))
# Learning-rate schedules that do not decay: a run on them can be measured as long as one likes (time_to_quality.py).
CONSTANT_LR_SCHEDULERS = ("constant", "constant_with_warmup")
# The recipe's clusters are measured on MNIST's 60,000 images in 100 (600 each): no recipe cluster holds fewer than 500.
MIN_IMAGES_PER_CLUSTER = 500


def training_device_is_cuda() -> bool:
    """Where a run will train: CUDA when torch sees a GPU and the launcher did not ask for the CPU."""
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")


def apply_recipe(args: argparse.Namespace, cuda: bool) -> None:
    """Fill the recipe's flags that are still None (not given) from the device's recipe; `args.recipe` names it."""
    values = asdict(CUDA_RECIPE if cuda else CPU_RECIPE)
    if args.noise_schedule == "entropy_scaled":
        values["snr_gamma"] = 0.0  # its noise level depends on each image: no SNR per timestep to weight by
        values["timestep_sampling"] = "uniform"  # the recipe's timesteps are unmeasured on its image-dependent noise
    if args.noise_schedule == "entropy_scaled" or args.class_conditional:
        values["autoguidance_scale"] = 1.0  # its own pipeline / classifier-free guidance instead
        values["cluster_conditioning"] = 0  # its own pipeline / the labels instead
    # The recipe's K is a ceiling: a small dataset gets fewer clusters (`recipe_clusters`); a K given is kept as given.
    args.clusters_from_recipe = getattr(args, "clusters_from_recipe", False) or args.cluster_conditioning is None
    for name, value in values.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.recipe = "cuda" if cuda else "cpu"


def describe_recipe(args: argparse.Namespace) -> str:
    """The recipe's part of the run's first line."""
    schedule = f" on a {args.lr_scheduler} schedule" if args.lr_scheduler not in CONSTANT_LR_SCHEDULERS else ""
    weighting = f", min-SNR-{args.snr_gamma:g} loss weighting" if args.snr_gamma else ""
    guidance = (f", autoguidance w {args.autoguidance_scale:g} by the EMA from {args.autoguidance_guide_fraction:.0%} of the steps"
                if args.autoguidance_scale != 1 else "")
    timesteps = ", logit-normal timesteps" if args.timestep_sampling == "logit_normal" else ""
    clusters = f", {args.cluster_conditioning} k-means clusters" if args.cluster_conditioning else ""
    length = f" and {args.num_epochs} epochs" if not args.max_train_steps else ""  # --max_train_steps sets the length
    return f"the {args.recipe} recipe's learning rate {args.learning_rate:g}{schedule}{weighting}{timesteps}{clusters}{guidance}{length} (flags given win)"


def recipe_clusters(k: int, num_images: int) -> int:
    """The recipe's K for a dataset of `num_images`: at most one cluster per MIN_IMAGES_PER_CLUSTER images, so a small
    dataset is not split into clusters of a few images each (none below that many)."""
    return min(k, num_images // MIN_IMAGES_PER_CLUSTER)
