"""Generate images from a saved pipeline.

    diffusion-lab sample ddpm-mnist --num_images 64                      # SDE-DPM-Solver++, 20 steps
    diffusion-lab sample ddpm-mnist --scheduler ddpm                     # 1,000 ancestral steps
    diffusion-lab sample cold-rows-mnist --noise 0.01          # cold diffusion, from the fitted start
    diffusion-lab sample cold-rows-mnist --conditional --num_images 8   # restore real test images
    diffusion-lab sample ddpm-cond --class_labels 7 --guidance_scale 3  # class-conditional runs
    diffusion-lab sample ddpm-mnist --guidance_scale 1.5                # an autoguided run (the CPU default) at another w
    diffusion-lab sample ddpm-cond --class_labels all --num_images 8    # 8 per class, a row per class

Writes `<output_dir>/images/00000.png ...`, `grid.png` and `samples.npz` (uint8, N x H x W x C; for class-conditional
pipelines also `labels`, the intended class of each image); with `--conditional`, `four_columns.png`: originals,
degraded (level T), one-step and iterative restorations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..argument_types import CommandParser, dataset_path, non_negative_float, path_name, positive_int, seed
from ..data import load_image_caches
from ..path_names import check_path_name, name_for_outputs
from ..sampling import (
    DEFAULT_SAMPLER,
    SAMPLERS,
    check_samples_folder,
    check_sampling_fits,
    class_labels_for,
    clear_earlier_samples,
    guidance_kwargs,
    is_class_conditional,
    is_cold,
    open_pipeline,
    restore,
    use_sampler,
    write_samples,
)
from ..stopping import sigterm_as_interrupt
from ..training.run_pipeline import load_run_pipeline
from . import check_device


def parse_args(argv):
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=path_name, metavar="PIPELINE", help="A pipeline folder or Hub id.")
    parser.add_argument("--output_dir", type=path_name, default=None, help="Default: <pipeline folder name>-samples.")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Allow replacing the samples in --output_dir.")
    parser.add_argument("--num_images", type=positive_int, default=None, help="Default: 64; for class-conditional pipelines 8 per class.")
    parser.add_argument("--batch_size", type=positive_int, default=64)
    parser.add_argument("--num_inference_steps", type=positive_int, default=None, help="Default: 20 for dpmsolver, 50 for ddim, every training step for ddpm; DES 100, cold diffusion every level.")
    parser.add_argument("--scheduler", choices=tuple(SAMPLERS), default=None,
                        help="The sampler, swapped in on the trained betas (stock DDPM pipelines; default dpmsolver-sde, 20 steps). DES and cold pipelines keep their own.")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust_remote_code", action="store_true", help="Load classes diffusion_lab lacks from the pipeline's own code (runs that code).")
    conditional = parser.add_argument_group("class-conditional and autoguided pipelines")
    conditional.add_argument("--class_labels", nargs="+", default=None,
                             help="Classes to draw, as indices or names, --num_images of each (default: all, a grid row per class).")
    conditional.add_argument("--guidance_scale", type=non_negative_float, default=None,
                             help="Class-conditional pipelines: classifier-free guidance w, 1 plain conditional (default), 0 "
                                  "unconditional, e.g. 3 for sharper classes. Autoguided ones (the CPU default run's): "
                                  "autoguidance w, default the pipeline's own, 1 the main model alone.")
    cold = parser.add_argument_group("cold diffusion")
    cold.add_argument("--noise", type=non_negative_float, default=0.0, help="Std of noise added to the fully degraded start.")
    cold.add_argument("--algorithm", type=int, choices=(1, 2), default=2, help="1: x_{s-1} = D(x0, s-1); 2: the paper's improved sampler.")
    cold.add_argument("--conditional", action="store_true", help="Restore the first --num_images images of --dataset_name's test split.")
    cold.add_argument("--dataset_name", type=dataset_path, default=None, help="With --conditional: the dataset (default: the shipped MNIST).")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = f"{name_for_outputs(args.pipeline, '--output_dir')}-samples"
        check_path_name(args.output_dir, "the default --output_dir (PIPELINE-samples)")
    check_device(args.device)
    return args


def restoration_figure(pipeline, args: argparse.Namespace, restore_kwargs: dict):
    """The seeds' four columns for the first --num_images (default 8) test images: original, degraded (level T),
    one-step and iterative restoration. `restore_kwargs`: the cold pipeline's options and its guidance."""
    # A class-conditional restorer is told each test image's own class, unless --class_labels says otherwise.
    conditional = is_class_conditional(pipeline)
    label_column = "label" if conditional and args.class_labels is None else None
    _, test_images = load_image_caches(args.dataset_name, resolution=pipeline.unet.config.sample_size, label_column=label_column)
    count = min(args.num_images or 8, len(test_images))
    originals = torch.from_numpy(np.array(test_images.images[:count]))
    labels = None
    if conditional:
        chosen = test_images.labels[:count].tolist() if label_column else class_labels_for(pipeline, args.class_labels, 1)
        labels = [chosen[i % len(chosen)] for i in range(len(originals))]
    return restore(pipeline, originals, len(originals), args.seed, args.num_inference_steps, labels, figure_rows=len(originals), **restore_kwargs).figure


def main(argv):
    args = parse_args(argv)
    with sigterm_as_interrupt():  # SIGTERM keeps what Ctrl-C keeps: the images made so far, in partial/
        write_requested_samples(args)


def write_requested_samples(args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    check_samples_folder(output_dir, args.overwrite_output_dir)
    pipeline = open_pipeline(args.pipeline, args.scheduler, args.device, args.trust_remote_code, load=load_run_pipeline)
    cold = is_cold(pipeline)
    if not cold and (args.noise or args.algorithm != 2 or args.conditional):
        raise ValueError("--noise, --algorithm and --conditional apply to cold-diffusion pipelines only: drop them.")
    cold_kwargs = {"noise": args.noise, "algorithm": args.algorithm} if cold else {}
    guidance = guidance_kwargs(pipeline, args.guidance_scale)
    if args.conditional:
        output_dir.mkdir(parents=True, exist_ok=True)
        clear_earlier_samples(output_dir)
        restoration_figure(pipeline, args, {**cold_kwargs, **guidance}).save(output_dir / "four_columns.png")
        print(f"wrote four_columns.png to {output_dir}")
        return
    per_class = args.num_images or 8
    labels = class_labels_for(pipeline, args.class_labels, per_class)
    num_images = len(labels) if labels is not None else (args.num_images or 64)
    check_sampling_fits(pipeline.unet, num_images, args.batch_size, args.device, value_bytes=1, output_dir=output_dir)
    steps = use_sampler(pipeline, args.scheduler or DEFAULT_SAMPLER, args.num_inference_steps)
    write_samples(pipeline, output_dir, num_images, args.batch_size, args.seed, steps, labels, per_class, **guidance, **cold_kwargs)
    print(f"wrote {num_images} images, grid.png and samples.npz to {output_dir}")
