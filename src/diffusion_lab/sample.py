"""Generate images from a saved pipeline.

    python -m diffusion_lab.sample ddpm-mnist --num_images 64                      # DPM-Solver, 20 steps
    python -m diffusion_lab.sample ddpm-mnist --scheduler ddpm                     # 1,000 ancestral steps
    python -m diffusion_lab.sample cold-rows-mnist --noise 0.01          # cold diffusion, from the fitted start
    python -m diffusion_lab.sample cold-rows-mnist --conditional --num_images 8   # restore real test images

Writes `<output_dir>/images/00000.png ...`, `grid.png` and `samples.npz` (uint8, N x H x W x C); with
`--conditional`, `four_columns.png`: originals, degraded (level T), one-step and iterative restorations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cli import run_command
from .data import image_grid, load_image_caches
from .pipelines.export import load_pipeline
from .sampling import DEFAULT_SAMPLER, FAST_SCHEDULERS, generate, is_cold, keeps_own_scheduler, use_sampler
from .training.run_folder import RUN_MARKERS

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="A pipeline folder or Hub id.")
    parser.add_argument("--output_dir", default=None, help="Default: <pipeline folder name>-samples.")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Allow replacing the samples in --output_dir.")
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Default: 20 for dpmsolver, 50 for ddim, every training step for ddpm; DES 100, cold diffusion every level.")
    parser.add_argument("--scheduler", choices=tuple(FAST_SCHEDULERS), default=None,
                        help="The sampler, swapped in on the trained betas (stock DDPM pipelines; default dpmsolver). DES and cold pipelines keep their own.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust_remote_code", action="store_true", help="Load classes diffusion_lab lacks from the pipeline's own code (runs that code).")
    cold = parser.add_argument_group("cold diffusion")
    cold.add_argument("--noise", type=float, default=0.0, help="Std of noise added to the fully degraded start.")
    cold.add_argument("--algorithm", type=int, choices=(1, 2), default=2, help="1: x_{s-1} = D(x0, s-1); 2: the paper's improved sampler.")
    cold.add_argument("--conditional", action="store_true", help="Restore the first --num_images images of --dataset_name's test split.")
    cold.add_argument("--dataset_name", default=None, help="With --conditional: the dataset (default: the shipped MNIST).")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if not args.noise >= 0:  # also refuses nan
        raise ValueError(f"--noise {args.noise} must be a number >= 0.")
    for name in ("num_images", "batch_size", "num_inference_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value} must be a positive integer.")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed} must not be negative.")
    check_device(args.device)
    return args


def check_device(device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N.") from None


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse to write samples over earlier samples or into a run folder (they would be uploaded with it)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a folder path.")
    taken = [name for name in ("samples.npz", *RUN_MARKERS) if (output_dir / name).exists()]
    if taken and not overwrite:
        raise FileExistsError(f"--output_dir {output_dir} already holds {taken[0]}: pass another --output_dir or --overwrite_output_dir.")
    try:  # fail now rather than after sampling
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot write to --output_dir {output_dir} ({error.strerror}): choose a writable folder.") from None


def restoration_figure(pipeline, args, cold_kwargs: dict) -> Image.Image:
    """The seeds' four columns for real test images: original, degraded (level T), one-step, iterative."""
    _, test_images = load_image_caches(args.dataset_name, resolution=pipeline.unet.config.sample_size)
    images = test_images.batch(np.arange(min(args.num_images, len(test_images))))
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
    check_output_dir(output_dir, args.overwrite_output_dir)
    pipeline = open_pipeline(args.pipeline, args.scheduler, args.device, args.trust_remote_code)
    cold = is_cold(pipeline)
    if not cold and (args.noise or args.algorithm != 2 or args.conditional):
        raise ValueError("--noise, --algorithm and --conditional apply to cold-diffusion pipelines only: drop them.")
    cold_kwargs = {"noise": args.noise, "algorithm": args.algorithm} if cold else {}
    if args.conditional:
        output_dir.mkdir(parents=True, exist_ok=True)
        restoration_figure(pipeline, args, cold_kwargs).save(output_dir / "four_columns.png")
        print(f"wrote four_columns.png to {output_dir}")
        return
    steps = use_sampler(pipeline, args.scheduler or DEFAULT_SAMPLER, args.num_inference_steps)
    images = generate(pipeline, args.num_images, args.batch_size, args.seed, steps, **cold_kwargs)

    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(output_dir / "images" / f"{index:05d}.png")
    grid = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).float() / 127.5 - 1
    image_grid(grid).save(output_dir / "grid.png")
    np.savez_compressed(output_dir / "samples.npz", images=images)
    print(f"wrote {len(images)} images, grid.png and samples.npz to {output_dir}")


if __name__ == "__main__":
    run_command(main)
