"""`python -m diffusion_lab.evaluate INPUT`: score generated images against a reference dataset.

INPUT is a pipeline (a saved folder or a Hub id: N samples are generated), a folder of PNGs, or an .npz.
Writes a JSON with every metric and its real-vs-real value, and prints a one-line summary.
"""

import argparse
from pathlib import Path

import torch

from ..cli import run_command
from ..pipelines.export import load_pipeline
from ..sample import DEFAULT_STEPS, FAST_SCHEDULERS, generate, swap_scheduler
from .image_evaluation import evaluate_images, summary_line, write_result
from .image_sources import load_dataset_images, load_npz_images, load_png_folder, to_nchw
from .pixel_range import PIXEL_RANGES


def generate_samples(
    pipeline_name_or_path: str,
    num_samples: int,
    batch_size: int,
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> torch.Tensor:
    """N images from a saved pipeline, uint8 (N, C, H, W), drawn as `python -m diffusion_lab.sample` draws them."""
    if trust_remote_code:
        from diffusers import DiffusionPipeline

        pipeline = DiffusionPipeline.from_pretrained(pipeline_name_or_path, trust_remote_code=True)
    else:
        pipeline = load_pipeline(pipeline_name_or_path)
    if scheduler is not None:
        swap_scheduler(pipeline, scheduler)
    pipeline.to(device)
    pipeline.set_progress_bar_config(leave=False, disable=None)
    steps = num_inference_steps or DEFAULT_STEPS[scheduler]
    images = generate(pipeline, num_samples, batch_size, seed, steps)
    return to_nchw(torch.from_numpy(images), source="pipeline output")


def load_input_images(args: argparse.Namespace) -> tuple[torch.Tensor, str]:
    """The images to evaluate and their declared pixel range, from whichever kind of INPUT was given."""
    path = Path(args.input)
    if path.suffix == ".npz":
        images = load_npz_images(path, args.npz_key)
    elif path.is_dir() and not (path / "model_index.json").is_file():
        images = load_png_folder(path)
    else:
        images = generate_samples(
            args.input,
            args.num_samples,
            args.batch_size,
            args.num_inference_steps,
            args.scheduler,
            args.seed,
            args.device,
            args.trust_remote_code,
        )
        return images, "uint8"
    return images, declared_range(images, args.pixel_range, args.input)


def declared_range(images: torch.Tensor, pixel_range: str | None, source: str) -> str:
    """`--pixel_range` when given; uint8 images need none, float images must have one."""
    if pixel_range is not None or images.dtype == torch.uint8:
        return pixel_range or "uint8"
    raise ValueError(f"{source} holds {images.dtype} images: declare their range with --pixel_range.")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="pipeline folder or Hub id, folder of PNGs, or .npz of images")
    parser.add_argument("--output", type=Path, default=Path("evaluation.json"), help="where to write the JSON")
    parser.add_argument("--pixel_range", choices=PIXEL_RANGES, help="range of float .npz images (uint8 is inferred)")
    parser.add_argument("--npz_key", default="images", help="array to read from the .npz")
    parser.add_argument("--originals", help="for conditional generation: .npz or PNG folder of the target images")
    parser.add_argument("--reference", default=None, help="dataset folder or Hub id (default: shipped MNIST)")
    parser.add_argument("--reference_split", default="test")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--num_samples", type=int, default=1000, help="images to generate from a pipeline")
    parser.add_argument("--num_inference_steps", type=int, default=None)
    parser.add_argument("--scheduler", choices=tuple(FAST_SCHEDULERS), default=None, help="swap the pipeline's sampler")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, and the choice of real subsets")
    parser.add_argument("--trust_remote_code", action="store_true", help="load pipelines that carry their own code")
    parser.add_argument("--inception_weights", default=None, help="Inception-v3 weights file for FID/IS")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    if args.num_samples < 2 or args.batch_size < 1:
        raise ValueError("--num_samples must be >= 2 and --batch_size >= 1.")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    images, images_range = load_input_images(args)
    originals, originals_range = None, "[-1,1]"
    if args.originals is not None:
        load = load_npz_images if args.originals.endswith(".npz") else load_png_folder
        originals = load(args.originals)
        originals_range = declared_range(originals, args.pixel_range, args.originals)
    reference, _ = load_dataset_images(args.reference, args.reference_split, args.image_column)
    result = evaluate_images(
        images,
        reference,
        args.batch_size,
        args.device,
        images_range=images_range,
        reference_range="uint8",
        originals=originals,
        originals_range=originals_range,
        inception_weights=args.inception_weights,
        seed=args.seed,
    )
    write_result(result, args.output)
    print(summary_line(result))
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    run_command(main)
