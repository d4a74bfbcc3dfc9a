"""`python -m diffusion_lab.evaluate INPUT`: score generated images against a reference dataset.

INPUT is a pipeline (a saved folder or a Hub id: N samples are generated, or with --conditional a cold-diffusion
pipeline restores N reference images), a folder of PNGs, or an .npz.
Writes a JSON with every metric and its real-vs-real value, and prints a one-line summary.
"""

import argparse
from pathlib import Path

import torch

from ..cli import run_command
from ..sample import check_device, open_pipeline
from ..sampling import DEFAULT_SAMPLER, FAST_SCHEDULERS, generate, is_cold, use_sampler
from .image_evaluation import evaluate_images, summary_line, write_result
from .image_sources import load_dataset_images, load_npz_images, load_png_folder, to_nchw
from .pixel_range import PIXEL_RANGES


@torch.no_grad()
def restore_images(pipeline, originals: torch.Tensor, batch_size: int, seed: int, **call_kwargs) -> torch.Tensor:
    """Conditional cold diffusion: each uint8 original degraded to level T and restored, as uint8 (N, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    restored = [
        pipeline(images=batch.float() / 127.5 - 1, generator=generator, output_type="pt", **call_kwargs).images
        for batch in originals.split(batch_size)
    ]
    return (torch.cat(restored).cpu() * 255).round().to(torch.uint8)


def pipeline_images(args: argparse.Namespace, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images from the pipeline INPUT, and the originals they restore (--conditional) or None."""
    pipeline = open_pipeline(args.input, args.scheduler, args.device, args.trust_remote_code)
    cold_kwargs = {"noise": args.noise, "algorithm": args.algorithm} if is_cold(pipeline) else {}
    if not cold_kwargs and (args.conditional or args.noise or args.algorithm != 2):
        raise ValueError("--conditional, --noise and --algorithm apply to cold-diffusion pipelines only: drop them.")
    if args.conditional:
        originals = reference[: args.num_samples]
        steps = {"num_inference_steps": args.num_inference_steps} if args.num_inference_steps else {}
        return restore_images(pipeline, originals, args.batch_size, args.seed, **steps, **cold_kwargs), originals
    steps = use_sampler(pipeline, args.scheduler or DEFAULT_SAMPLER, args.num_inference_steps)
    images = generate(pipeline, args.num_samples, args.batch_size, args.seed, steps, **cold_kwargs)
    return to_nchw(torch.from_numpy(images), source="pipeline output"), None


def declared_range(images: torch.Tensor, pixel_range: str | None, source: str) -> str:
    """`--pixel_range` when given; uint8 images need none, float images must have one."""
    if pixel_range is not None or images.dtype == torch.uint8:
        return pixel_range or "uint8"
    raise ValueError(f"{source} holds {images.dtype} images: declare their range with --pixel_range.")


def load_images(path: str, npz_key: str = "images") -> torch.Tensor:
    return load_npz_images(path, npz_key) if str(path).endswith(".npz") else load_png_folder(path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="pipeline folder or Hub id, folder of PNGs, or .npz of images")
    parser.add_argument("--output", type=Path, default=Path("evaluation.json"), help="where to write the JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--pixel_range", choices=PIXEL_RANGES, help="range of float .npz images (uint8 is inferred)")
    parser.add_argument("--npz_key", default="images", help="array to read from the .npz")
    parser.add_argument("--originals", help="with image INPUT from conditional generation: the target images")
    parser.add_argument("--reference", default=None, help="dataset folder or Hub id (default: shipped MNIST)")
    parser.add_argument("--reference_split", default="test")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--num_samples", type=int, default=1000, help="images to generate from a pipeline")
    parser.add_argument("--num_inference_steps", type=int, default=None)
    parser.add_argument("--scheduler", choices=tuple(FAST_SCHEDULERS), default=None, help="the sampler on the trained betas (stock DDPM pipelines; default dpmsolver, 20 steps; ddpm: every training step)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, and the choice of real subsets")
    parser.add_argument("--trust_remote_code", action="store_true", help="load pipelines that carry their own code")
    cold = parser.add_argument_group("cold diffusion")
    cold.add_argument(
        "--conditional",
        action="store_true",
        help="restore the first N reference images; they are scored against their originals (paired PSNR/SSIM) "
        "and the rest of the split is the reference",
    )
    cold.add_argument("--noise", type=float, default=0.0, help="std of noise added to the fully degraded start")
    cold.add_argument("--algorithm", type=int, choices=(1, 2), default=2, help="cold sampler: 1 or 2 (improved)")
    parser.add_argument("--inception_weights", default=None, help="FID Inception-v3 weights (torch-fidelity's "
                        "weights-inception-2015-12-05-6726825d.pth or a .safetensors copy) for FID and IS ± std over 10 splits; "
                        "default: that file in torch hub's cache, if there")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    if args.num_samples < 2 or args.batch_size < 1 or args.noise < 0:
        raise ValueError("--num_samples must be >= 2, --batch_size >= 1 and --noise >= 0.")
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise ValueError(f"--num_inference_steps {args.num_inference_steps} must be a positive integer.")
    if args.inception_weights is not None and not Path(args.inception_weights).is_file():
        raise ValueError(f"--inception_weights {args.inception_weights} is not a file: pass the Inception weights file, or drop the flag.")
    if args.output.exists() and not args.overwrite:
        raise ValueError(f"{args.output} already exists: pass --overwrite to replace it, or another --output.")
    check_device(args.device)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    reference, _ = load_dataset_images(args.reference, args.reference_split, args.image_column)
    is_image_file_input = args.input.endswith(".npz") or (
        Path(args.input).is_dir() and not (Path(args.input) / "model_index.json").is_file()
    )
    if is_image_file_input:
        images = load_images(args.input, args.npz_key)
        images_range = declared_range(images, args.pixel_range, args.input)
        originals = None if args.originals is None else load_images(args.originals, args.npz_key)
    elif args.originals is not None:
        raise ValueError("--originals goes with image INPUT; a cold-diffusion pipeline takes --conditional instead.")
    else:
        images, originals = pipeline_images(args, reference)
        images_range = "uint8"
        if originals is not None:
            # The restored originals are left out of the reference, so the distribution metrics see new images.
            reference = reference[len(originals) :]
    result = evaluate_images(
        images,
        reference,
        args.batch_size,
        args.device,
        images_range=images_range,
        reference_range="uint8",
        originals=originals,
        originals_range="[-1,1]" if originals is None else declared_range(originals, args.pixel_range, "originals"),
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
