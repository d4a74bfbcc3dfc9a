"""Guide an unconditional DDPM pipeline by a weaker version of itself (autoguidance, Karras et al. 2024).

    diffusion-lab autoguide ddpm-mnist ddpm-mnist/checkpoint-8000 --output_dir ddpm-mnist-autoguided
    diffusion-lab sample ddpm-mnist-autoguided --num_images 64

MAIN and GUIDE are pipeline folders, run folders or `checkpoint-<step>` folders of the same noise process and image
shape (a checkpoint gives its EMA weights): typically a run and its checkpoint from about a third of its steps. Writes an
`AutoguidedDDPMPipeline` (safetensors) to --output_dir; `sample`, `evaluate` and `DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)` use it like any pipeline, at two model calls per sampling step. On MNIST, the default recipe's
15-minute model guided by its 5-minute EMA at w = 2 scored 0.63x the digit FD of the model alone (one run, three
draws; benchmarks/RESULTS.md, section 15). The CPU default run saves an autoguided pipeline itself (its EMA from a
third of the steps guides it); given as MAIN or GUIDE, an autoguided pipeline stands for its main model, so this
command re-pairs it with another guide.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DDPMPipeline

from ..argument_types import CommandParser, non_negative_float, path_name
from ..pipelines import AutoguidedDDPMPipeline
from ..pipelines.export import save_pipeline
from ..training.run_pipeline import load_run_pipeline


def parse_args(argv):
    parser = CommandParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("main", type=path_name, metavar="MAIN", help="The pipeline to sample from (folder, run or checkpoint).")
    parser.add_argument("guide", type=path_name, metavar="GUIDE", help="The weaker model, e.g. an earlier checkpoint of the same run.")
    parser.add_argument("--output_dir", type=path_name, required=True, help="A new folder for the autoguided pipeline.")
    parser.add_argument("--guidance_scale", type=non_negative_float, default=2.0,
                        help="w in out_guide + w (out_main - out_guide): 1 is MAIN alone (default 2).")
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def check_output_folder(output_dir: Path) -> None:
    """Refuse, writing nothing, a path that is a file or a folder holding anything."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a new folder path.")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise FileExistsError(f"--output_dir {output_dir} is not empty: pass a new folder, nothing is overwritten.")


def main_model_pipeline(pipeline):
    """An autoguided pipeline's main model as a stock DDPM pipeline (it is re-paired, not guided twice); others as they are."""
    if isinstance(pipeline, AutoguidedDDPMPipeline):
        return DDPMPipeline(unet=pipeline.unet, scheduler=pipeline.scheduler)
    return pipeline


def check_compatible(main, guide, main_name: str, guide_name: str) -> None:
    """Both unconditional stock DDPM pipelines with the same image shape and the same noise process."""
    for pipeline, name in ((main, main_name), (guide, guide_name)):
        if type(pipeline) is not DDPMPipeline:
            raise ValueError(f"{name} is a {type(pipeline).__name__}: autoguidance takes unconditional DDPM pipelines "
                             "(train_ddpm.py without --class_conditional; class-conditional ones have --guidance_scale).")
    for key in ("sample_size", "in_channels", "out_channels"):
        if main.unet.config[key] != guide.unet.config[key]:
            raise ValueError(f"{guide_name} has {key} {guide.unet.config[key]} against {main.unet.config[key]} for {main_name}: "
                             "the guide must model the same images.")
    same_process = (main.scheduler.config.prediction_type == guide.scheduler.config.prediction_type
                    and main.scheduler.alphas_cumprod.shape == guide.scheduler.alphas_cumprod.shape
                    and torch.allclose(main.scheduler.alphas_cumprod, guide.scheduler.alphas_cumprod))
    if not same_process:
        raise ValueError(f"{guide_name} was trained with another noise schedule or prediction type than {main_name}: "
                         "pass a guide from the same recipe (e.g. an earlier checkpoint of the run).")


def main(argv):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    check_output_folder(output_dir)
    if Path(args.main).resolve() == Path(args.guide).resolve():
        raise ValueError("MAIN and GUIDE are the same folder, so guidance would change nothing: pass an earlier checkpoint as GUIDE.")
    main_pipeline, guide_pipeline = (main_model_pipeline(load_run_pipeline(name)) for name in (args.main, args.guide))
    check_compatible(main_pipeline, guide_pipeline, args.main, args.guide)
    pipeline = AutoguidedDDPMPipeline(unet=main_pipeline.unet, guide_unet=guide_pipeline.unet,
                                      scheduler=main_pipeline.scheduler, guidance_scale=args.guidance_scale)
    save_pipeline(pipeline, output_dir)
    print(f"wrote the autoguided pipeline (w = {args.guidance_scale:g}) to {output_dir}. Sample from it with\n"
          f"  diffusion-lab sample {output_dir} --num_images 64")
