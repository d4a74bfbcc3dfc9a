"""`diffusion-lab evaluate INPUT`: score generated images against a reference dataset.

INPUT is a pipeline (a saved folder or a Hub id: N samples are generated, or with --conditional a cold-diffusion
pipeline restores N reference images), a folder of PNGs, or an .npz.
Writes a JSON with every metric and its real-vs-real value, and prints a one-line summary.

Class-conditional pipelines draw N/K images of each class (or of --class_labels) and add the digit classifier's
accuracy on the intended classes, per class; an .npz with a `labels` array (written by `sample`) gets it too.
Several --guidance_scale values sweep classifier-free guidance (class-conditional pipelines) or autoguidance
(autoguided ones): one row each (FD, IS, and accuracy where there are classes) in a table (`<output>.md`) and a plot
(`<output>.png`) beside the JSON.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..argument_types import CommandParser, at_least_two, dataset_path, non_negative_float, path, path_name, positive_int, seed
from ..evaluation.dinov2 import DEFAULT_DINOV2, load_dinov2
from ..evaluation.guidance_sweep import guidance_table, plot_guidance_sweep
from ..evaluation.image_evaluation import evaluate_images, summary_line, write_result
from ..evaluation.image_sources import (
    declared_range,
    load_dataset_images,
    load_images,
    load_npz_labels,
    to_nchw,
)
from ..evaluation.pixel_range import PIXEL_RANGES
from ..path_names import check_path_name, name_for_outputs
from ..sampling import (
    DEFAULT_SAMPLER,
    SAMPLERS,
    generate,
    guidance_kwargs,
    is_class_conditional,
    is_cold,
    labels_for_samples,
    open_pipeline,
    restore,
    use_sampler,
)
from ..stopping import TrainingStopped, interruption, sigterm_as_interrupt
from ..training.run_pipeline import is_run_without_pipeline, load_run_pipeline
from . import check_device


def pipeline_images(args: argparse.Namespace, reference: torch.Tensor, pipeline, guidance: dict):
    """uint8 images from the pipeline INPUT, the originals they restore (--conditional) or None, and the intended
    class of each image (class-conditional pipelines) or None. `guidance`: the pipeline's guidance kwargs
    (`guidance_kwargs`)."""
    cold_kwargs = {"noise": args.noise, "algorithm": args.algorithm} if is_cold(pipeline) else {}
    conditional = is_class_conditional(pipeline)
    if not conditional and args.class_labels is not None:
        raise ValueError("--class_labels applies to class-conditional pipelines only: drop it.")
    if not cold_kwargs and (args.conditional or args.noise or args.algorithm != 2):
        raise ValueError("--conditional, --noise and --algorithm apply to cold-diffusion pipelines only: drop them.")
    if args.conditional:
        if conditional:
            raise ValueError("--conditional with a class-conditional restorer is not supported here: use `sample --conditional`.")
        originals = reference[: args.num_samples]
        return restore(pipeline, originals, args.batch_size, args.seed, args.num_inference_steps, **cold_kwargs).images, originals, None
    steps = use_sampler(pipeline, args.scheduler or DEFAULT_SAMPLER, args.num_inference_steps)
    labels = None
    if conditional:
        labels = labels_for_samples(pipeline, args.class_labels, args.num_samples)
    images = generate(pipeline, len(labels) if labels else args.num_samples, args.batch_size, args.seed, steps, class_labels=labels,
                      **cold_kwargs, **guidance)
    return to_nchw(torch.from_numpy(images), source="pipeline output"), None, None if labels is None else torch.tensor(labels)


def default_output(input_name: str) -> Path:
    """`<INPUT>-evaluation.json` beside a local INPUT (`samples.npz` -> `samples-evaluation.json` in its folder, a folder
    `ddpm-mnist/` -> `ddpm-mnist-evaluation.json` next to it), so that evaluating two inputs never writes one file, and
    nothing lands in the current folder unless INPUT is a Hub id."""
    path = Path(input_name)
    if path.is_file():
        return path.with_name(f"{path.stem}-evaluation.json")
    name = name_for_outputs(input_name, "--output")
    if path.is_dir():
        return path.resolve().parent / f"{name}-evaluation.json"
    return Path(f"{name}-evaluation.json")  # a Hub id (or a missing path, refused later)
def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=path_name, metavar="INPUT", help="pipeline folder or Hub id, folder of PNGs, or .npz of images")
    parser.add_argument(
        "--output", type=path, default=None,
        help="where to write the JSON (default: beside INPUT, <INPUT name>-evaluation.json; for a Hub id, in the current folder)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--pixel_range", choices=PIXEL_RANGES, help="range of float .npz images (uint8 is inferred)")
    parser.add_argument("--npz_key", default="images", help="array to read from the .npz")
    parser.add_argument("--originals", type=path_name, help="with image INPUT from conditional generation: the target images")
    parser.add_argument("--reference", type=dataset_path, default=None, help="dataset folder or Hub id (default: shipped MNIST)")
    parser.add_argument("--reference_split", default="test")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--num_samples", type=at_least_two, default=1000, help="images to generate from a pipeline")
    parser.add_argument("--num_inference_steps", type=positive_int, default=None)
    parser.add_argument("--scheduler", choices=tuple(SAMPLERS), default=None, help="the sampler on the trained betas (stock DDPM pipelines; default dpmsolver-sde, 20 steps; ddpm: every training step)")
    parser.add_argument("--seed", type=seed, default=0, help="sampling seed, and the choice of real subsets")
    parser.add_argument("--trust_remote_code", action="store_true", help="load pipelines that carry their own code")
    cold = parser.add_argument_group("cold diffusion")
    cold.add_argument(
        "--conditional",
        action="store_true",
        help="restore the first N reference images; they are scored against their originals (paired PSNR/SSIM) "
        "and the rest of the split is the reference",
    )
    cold.add_argument("--noise", type=non_negative_float, default=0.0, help="std of noise added to the fully degraded start")
    cold.add_argument("--algorithm", type=int, choices=(1, 2), default=2, help="cold sampler: 1 or 2 (improved)")
    conditional = parser.add_argument_group("class-conditional and autoguided pipelines")
    conditional.add_argument("--class_labels", nargs="+", default=None, help="classes to draw, N/K each (default: all)")
    conditional.add_argument("--guidance_scale", type=non_negative_float, nargs="+", default=None,
                             help="classifier-free guidance w (1, the default: plain conditional, 0: unconditional), or an "
                                  "autoguided pipeline's w (default its own, 1: the main model alone); several values: a sweep")
    parser.add_argument("--dinov2_model", type=path_name, default=DEFAULT_DINOV2,
                        help="DINOv2 weights for FD-DINOv2: a local folder or a Hub id in the cache ('none': skip)")
    parser.add_argument("--inception_weights", type=path_name, default=None, help="FID Inception-v3 weights (torch-fidelity's "
                        "weights-inception-2015-12-05-6726825d.pth or a .safetensors copy) for FID and IS ± std over 10 splits; "
                        "default: that file in torch hub's cache, if there")
    parser.add_argument("--batch_size", type=positive_int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = default_output(args.input)
        check_path_name(args.output, "the default --output (INPUT-evaluation.json)")
    if args.guidance_scale and len(args.guidance_scale) > 1:
        for derived in (args.output.with_suffix(".md"), args.output.with_suffix(".png")):
            if derived.exists() and not args.overwrite:
                raise ValueError(f"{derived} already exists: pass --overwrite to replace it, or another --output.")
    if args.inception_weights is not None and not Path(args.inception_weights).is_file():
        raise ValueError(f"--inception_weights {args.inception_weights} is not a file: pass the Inception weights file, or drop the flag.")
    if args.output.exists() and not args.overwrite:
        raise ValueError(f"{args.output} already exists: pass --overwrite to replace it, or another --output.")
    folder = args.output.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):  # found now, not after all the work
        problem = "does not exist" if not folder.exists() else "is not a writable folder"
        raise ValueError(f"the folder of --output {args.output} {problem}: create it or pass another --output.")
    check_device(args.device)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with sigterm_as_interrupt():  # SIGTERM stops as Ctrl-C does, in one line
        try:
            return evaluate(args)
        except KeyboardInterrupt as stop:
            what, exit_code = interruption(stop)
            raise TrainingStopped(f"{what}: evaluation stopped before writing {args.output} (nothing is written until it "
                                  "ends); rerun the command.", exit_code) from None


def evaluate(args: argparse.Namespace) -> dict:
    reference, _ = load_dataset_images(args.reference, args.reference_split, args.image_column)
    folder = Path(args.input)
    is_image_file_input = args.input.endswith(".npz") or (
        folder.is_dir() and not (folder / "model_index.json").is_file() and not is_run_without_pipeline(folder)
    )
    dinov2 = None
    if args.dinov2_model != "none":
        model, _ = load_dinov2(args.dinov2_model)
        dinov2 = model if model is not None else args.dinov2_model  # a name: evaluate_images notes why it is skipped
    score = dict(batch_size=args.batch_size, device=args.device, reference_range="uint8",
                 inception_weights=args.inception_weights, seed=args.seed, dinov2=dinov2)
    if is_image_file_input:
        if args.class_labels is not None or args.guidance_scale is not None:
            raise ValueError("--class_labels and --guidance_scale apply to pipeline INPUT: an .npz from `sample` carries its labels.")
        images = load_images(args.input, args.npz_key)
        originals = None if args.originals is None else load_images(args.originals, args.npz_key)
        result = evaluate_images(
            images, reference, images_range=declared_range(images, args.pixel_range, args.input), originals=originals,
            originals_range="[-1,1]" if originals is None else declared_range(originals, args.pixel_range, "originals"),
            labels=load_npz_labels(args.input), **score,
        )
    elif args.originals is not None:
        raise ValueError("--originals goes with image INPUT; a cold-diffusion pipeline takes --conditional instead.")
    else:
        pipeline = open_pipeline(args.input, args.scheduler, args.device, args.trust_remote_code, load=load_run_pipeline)
        results = []
        for guidance_scale in args.guidance_scale or [None]:
            guidance = guidance_kwargs(pipeline, guidance_scale)
            images, originals, labels = pipeline_images(args, reference, pipeline, guidance)
            # The restored originals are left out of the reference, so the distribution metrics see new images.
            compared = reference if originals is None else reference[len(originals) :]
            result = evaluate_images(images, compared, images_range="uint8", originals=originals, originals_range="uint8",
                                     labels=labels, **score)
            if "guidance_scale" in guidance:  # also an autoguided pipeline's own w
                result["guidance_scale"] = guidance["guidance_scale"]
                print(f"guidance {result['guidance_scale']:g}: {summary_line(result)}")
            results.append(result)
        if len(results) > 1:
            result = {"guidance_sweep": results}
            table = guidance_table(results)
            args.output.with_suffix(".md").write_text(table + "\n")
            plot_guidance_sweep(results, args.output.with_suffix(".png"))
            write_result(result, args.output)
            print(table)
            for note in results[0]["notes"]:
                print(f"note: {note}")
            print(f"wrote {args.output}, {args.output.with_suffix('.md')} and {args.output.with_suffix('.png')}")
            return result
    write_result(result, args.output)
    print(summary_line(result))
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.output}")
    return result

