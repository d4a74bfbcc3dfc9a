"""Generate images from a saved pipeline.

    python -m diffusion_lab.sample ddpm-mnist --num_images 64 --scheduler ddim --num_inference_steps 50

Writes `<output_dir>/images/00000.png ...`, `grid.png` and `samples.npz` (uint8, N x H x W x C).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image
from tqdm.auto import tqdm

from .cli import run_command
from .data import image_grid
from .pipelines.export import load_pipeline

FAST_SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver": DPMSolverMultistepScheduler}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="A pipeline folder or Hub id.")
    parser.add_argument("--output_dir", default=None, help="Default: <pipeline folder name>-samples.")
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="Default: 1000 for ddpm, 50 for ddim, 20 for dpmsolver.")
    parser.add_argument("--scheduler", choices=tuple(FAST_SCHEDULERS), default=None, help="Swap the sampler (keeps the trained betas).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trust_remote_code", action="store_true", help="Load classes diffusion_lab lacks from the pipeline's own code (runs that code).")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    for name in ("num_images", "batch_size", "num_inference_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value} must be a positive integer.")
    return args


def swap_scheduler(pipeline, name: str) -> None:
    """Replace the sampler, keeping the betas (diffusers' from_config carries trained_betas and beta settings)."""
    pipeline.scheduler = FAST_SCHEDULERS[name].from_config(pipeline.scheduler.config)


DEFAULT_STEPS = {None: None, "ddpm": None, "ddim": 50, "dpmsolver": 20}


def generate(pipeline, num_images: int, batch_size: int, seed: int, num_inference_steps: int | None) -> np.ndarray:
    """uint8 images (N, H, W, C); batch b uses generator seed + b, so results do not depend on the device count."""
    batches = []
    for batch_index, start in enumerate(tqdm(range(0, num_images, batch_size), desc="sampling")):
        generator = torch.Generator().manual_seed(seed + batch_index)
        kwargs = {"num_inference_steps": num_inference_steps} if num_inference_steps else {}
        images = pipeline(batch_size=min(batch_size, num_images - start), generator=generator, output_type="np", **kwargs).images
        batches.append((np.asarray(images) * 255).round().astype(np.uint8))
    return np.concatenate(batches)


def main(argv):
    args = parse_args(argv)
    if args.trust_remote_code:
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(args.pipeline, trust_remote_code=True)
    else:
        pipeline = load_pipeline(args.pipeline)
    if args.scheduler:
        swap_scheduler(pipeline, args.scheduler)
    pipeline.to(args.device)
    pipeline.set_progress_bar_config(leave=False)
    images = generate(pipeline, args.num_images, args.batch_size, args.seed, args.num_inference_steps or DEFAULT_STEPS[args.scheduler])

    output_dir = Path(args.output_dir or f"{Path(args.pipeline).name}-samples")
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(output_dir / "images" / f"{index:05d}.png")
    grid = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).float() / 127.5 - 1
    image_grid(grid).save(output_dir / "grid.png")
    np.savez_compressed(output_dir / "samples.npz", images=images)
    print(f"wrote {len(images)} images, grid.png and samples.npz to {output_dir}")


if __name__ == "__main__":
    run_command(main)
