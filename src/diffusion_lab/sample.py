"""Generate images from a saved pipeline.

    python -m diffusion_lab.sample ddpm-mnist --num_images 64                      # SDE-DPM-Solver++, 20 steps
    python -m diffusion_lab.sample ddpm-mnist --scheduler ddpm                     # 1,000 ancestral steps
    python -m diffusion_lab.sample cold-rows-mnist --noise 0.01          # cold diffusion, from the fitted start
    python -m diffusion_lab.sample cold-rows-mnist --conditional --num_images 8   # restore real test images
    python -m diffusion_lab.sample ddpm-cond --class_labels 7 --guidance_scale 3  # class-conditional runs
    python -m diffusion_lab.sample ddpm-cond --class_labels all --num_images 8    # 8 per class, a row per class

Writes `<output_dir>/images/00000.png ...`, `grid.png` and `samples.npz` (uint8, N x H x W x C; for class-conditional
pipelines also `labels`, the intended class of each image); with `--conditional`, `four_columns.png`: originals,
degraded (level T), one-step and iterative restorations.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cli import run_command
from .data import image_grid, load_image_caches
from .pipelines.class_guidance import class_index, num_classes_of
from .pipelines.export import load_pipeline
from .path_names import check_path_name
from .sample_output import SampleWriter, clear_earlier_samples
from .sampling import DEFAULT_SAMPLER, SAMPLERS, generate_batches, is_cold, keeps_own_scheduler, use_sampler
from .sampling_memory import check_sampling_fits
from .training.run_folder import RUN_MARKERS
from .training.stopping import TrainingStopped

def parse_args(argv):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="A pipeline folder or Hub id.")
    parser.add_argument("--output_dir", default=None, help="Default: <pipeline folder name>-samples.")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Allow replacing the samples in --output_dir.")
    parser.add_argument("--num_images", type=int, default=None, help="Default: 64; for class-conditional pipelines 8 per class.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Default: 20 for dpmsolver, 50 for ddim, every training step for ddpm; DES 100, cold diffusion every level.")
    parser.add_argument("--scheduler", choices=tuple(SAMPLERS), default=None,
                        help="The sampler, swapped in on the trained betas (stock DDPM pipelines; default dpmsolver-sde, 20 steps). DES and cold pipelines keep their own.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust_remote_code", action="store_true", help="Load classes diffusion_lab lacks from the pipeline's own code (runs that code).")
    conditional = parser.add_argument_group("class-conditional pipelines")
    conditional.add_argument("--class_labels", nargs="+", default=None,
                             help="Classes to draw, as indices or names, --num_images of each (default: all, a grid row per class).")
    conditional.add_argument("--guidance_scale", type=float, default=1.0,
                             help="Classifier-free guidance w: 1 plain conditional (default), 0 unconditional, e.g. 3 for sharper classes.")
    cold = parser.add_argument_group("cold diffusion")
    cold.add_argument("--noise", type=float, default=0.0, help="Std of noise added to the fully degraded start.")
    cold.add_argument("--algorithm", type=int, choices=(1, 2), default=2, help="1: x_{s-1} = D(x0, s-1); 2: the paper's improved sampler.")
    cold.add_argument("--conditional", action="store_true", help="Restore the first --num_images images of --dataset_name's test split.")
    cold.add_argument("--dataset_name", default=None, help="With --conditional: the dataset (default: the shipped MNIST).")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if not args.noise >= 0:  # also refuses nan
        raise ValueError(f"--noise {args.noise} must be a number >= 0.")
    if not (args.guidance_scale >= 0 and np.isfinite(args.guidance_scale)):
        raise ValueError(f"--guidance_scale {args.guidance_scale} must be a finite number >= 0 (1: plain conditional).")
    for name in ("num_images", "batch_size", "num_inference_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value} must be a positive integer.")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed} must not be negative.")
    for flag, value in (("PIPELINE", args.pipeline), ("--dataset_name", args.dataset_name)):  # --output_dir: in main
        if value is not None:
            check_path_name(value, flag)
    check_device(args.device)
    return args


def check_device(device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N.") from None


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse, writing nothing, a folder that holds anything already (earlier samples, a run: samples written there
    would be uploaded with it) unless --overwrite_output_dir, and one that cannot be created or written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a folder path.")
    held = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    first = [name for name in ("samples.npz", *RUN_MARKERS) if name in held] + held  # the telling one first
    if held and not overwrite:
        raise FileExistsError(f"--output_dir {output_dir} already holds {first[0]}: pass another --output_dir or --overwrite_output_dir.")
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):  # fail now rather than after sampling
        reason = "Not a directory" if not existing.is_dir() else "Permission denied"
        raise PermissionError(f"cannot write to --output_dir {output_dir} ({reason}): choose a writable folder.")


def class_labels_for(pipeline, class_labels: list[str] | None, per_class: int) -> list[int] | None:
    """The intended class of each image: `per_class` of each class asked for (default, or "all": every class, in
    order); None for a pipeline that is not class-conditional (which must not be given labels)."""
    num_classes = num_classes_of(pipeline.unet)
    if num_classes is None:
        if class_labels is not None:
            raise ValueError("--class_labels applies to class-conditional pipelines only (trained with --class_conditional): drop it.")
        return None
    if class_labels is None or class_labels == ["all"]:
        classes = list(range(num_classes))
    else:
        names = getattr(pipeline.config, "class_names", None)
        try:
            classes = [class_index(label, names, num_classes) for label in class_labels]
        except ValueError as error:
            raise ValueError(f"--class_labels: {error}") from None
    return [label for label in classes for _ in range(per_class)]


def restoration_figure(pipeline, args, cold_kwargs: dict) -> Image.Image:
    """The seeds' four columns for real test images: original, degraded (level T), one-step, iterative."""
    conditional = num_classes_of(pipeline.unet) is not None
    # A class-conditional restorer is told each test image's own class, unless --class_labels says otherwise.
    label_column = "label" if conditional and args.class_labels is None else None
    _, test_images = load_image_caches(args.dataset_name, resolution=pipeline.unet.config.sample_size, label_column=label_column)
    indices = np.arange(min(args.num_images or 8, len(test_images)))
    images = test_images.batch(indices)
    if conditional:
        labels = test_images.batch_labels(indices).tolist() if label_column else class_labels_for(pipeline, args.class_labels, 1)
        cold_kwargs = {**cold_kwargs, "class_labels": [labels[i % len(labels)] for i in range(len(images))], "guidance_scale": args.guidance_scale}
    generator = torch.Generator().manual_seed(args.seed)
    output = pipeline(images=images, generator=generator, num_inference_steps=args.num_inference_steps, output_type="pt", **cold_kwargs)
    columns = torch.stack([output.originals, output.degraded, output.direct, output.images], dim=1)
    return image_grid(columns.flatten(0, 1) * 2 - 1, columns=4)


def open_pipeline(name_or_path: str, scheduler: str | None = None, device: str = "cpu", trust_remote_code: bool = False):
    """A saved pipeline on `device`; asking for a `scheduler` (swapped in later by `use_sampler`) is refused for
    pipelines that keep their own."""
    if trust_remote_code:
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(name_or_path, trust_remote_code=True, use_safetensors=True)
    else:
        pipeline = load_pipeline(name_or_path)
    if scheduler is not None and keeps_own_scheduler(pipeline):
        raise ValueError("--scheduler applies to stock DDPM pipelines only: drop it (use --num_inference_steps for fewer steps).")
    pipeline.set_progress_bar_config(leave=False)
    return pipeline.to(device)


def main(argv):
    args = parse_args(argv)
    output_dir = Path(args.output_dir or f"{Path(args.pipeline).name}-samples")
    check_path_name(output_dir, "--output_dir" if args.output_dir else "the default --output_dir (PIPELINE-samples)")
    check_output_dir(output_dir, args.overwrite_output_dir)
    pipeline = open_pipeline(args.pipeline, args.scheduler, args.device, args.trust_remote_code)
    cold = is_cold(pipeline)
    if not cold and (args.noise or args.algorithm != 2 or args.conditional):
        raise ValueError("--noise, --algorithm and --conditional apply to cold-diffusion pipelines only: drop them.")
    cold_kwargs = {"noise": args.noise, "algorithm": args.algorithm} if cold else {}
    conditional = num_classes_of(pipeline.unet) is not None
    if not conditional and args.guidance_scale != 1:
        raise ValueError("--guidance_scale applies to class-conditional pipelines only (trained with --class_conditional): drop it.")
    if args.conditional:
        output_dir.mkdir(parents=True, exist_ok=True)
        clear_earlier_samples(output_dir)
        restoration_figure(pipeline, args, cold_kwargs).save(output_dir / "four_columns.png")
        print(f"wrote four_columns.png to {output_dir}")
        return
    per_class = args.num_images or 8
    labels = class_labels_for(pipeline, args.class_labels, per_class)
    num_images = len(labels) if labels is not None else (args.num_images or 64)
    check_sampling_fits(pipeline.unet, num_images, args.batch_size, args.device, value_bytes=1, output_dir=output_dir)
    guidance = {"guidance_scale": args.guidance_scale} if conditional else {}
    steps = use_sampler(pipeline, args.scheduler or DEFAULT_SAMPLER, args.num_inference_steps)
    writer = SampleWriter(output_dir, num_images)
    try:
        for batch in generate_batches(pipeline, num_images, args.batch_size, args.seed, steps, class_labels=labels, **guidance, **cold_kwargs):
            writer.add(batch)
    except KeyboardInterrupt:
        raise TrainingStopped(f"interrupted: the {writer.count} of {num_images} images made so far are in {writer.folder}/ "
                              "(images/*.png, samples.npy); rerun with --overwrite_output_dir for all of them.", 130) from None
    images = writer.images
    if labels is None:
        grid = image_grid(torch.from_numpy(np.array(images[:64])).permute(0, 3, 1, 2).float() / 127.5 - 1)
    else:
        grid = class_grid(images, np.asarray(labels), per_class)
    writer.finish(grid, labels)
    print(f"wrote {num_images} images, grid.png and samples.npz to {output_dir}")


def class_grid(images: np.ndarray, labels: np.ndarray, per_class: int, max_columns: int = 16) -> Image.Image:
    """One row per class asked for (in the order asked), its first `max_columns` images."""
    columns = min(per_class, max_columns)
    rows = [images[start : start + columns] for start in range(0, len(images), per_class)]
    grid = torch.from_numpy(np.concatenate(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return image_grid(grid, columns=columns)


if __name__ == "__main__":
    run_command(main)
