"""Generation for every pipeline kind: opening a saved pipeline for sampling, the classes to draw, unconditional
and class-conditional generation in seeded batches, and conditional (restoration) sampling of cold diffusion.

Batch b of a call uses the generator seed + b, so results do not depend on the batch count of earlier calls or the
device count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..pipelines import AutoguidedDDPMPipeline, ClusterConditionalDDPMPipeline
from ..pipelines.class_guidance import class_index, num_classes_of
from ..pipelines.export import load_pipeline
from ..pipelines.validation import check_images
from .figures import four_columns
from .samplers import DEFAULT_SAMPLER, keeps_own_scheduler, use_sampler

# Rows of the four-column figure of a restoration.
FIGURE_ROWS = 8


def open_pipeline(name_or_path: str, scheduler: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
                  load=load_pipeline):
    """A saved pipeline on `device`, loaded by `load` (`load_pipeline`; the commands pass the trainer's, which also
    opens a run that stopped before saving one) without running its code unless `trust_remote_code`; asking for a
    `scheduler` (swapped in later by `use_sampler`) is refused for pipelines that keep their own."""
    pipeline = load(name_or_path, trust_remote_code=trust_remote_code)
    if scheduler is not None and keeps_own_scheduler(pipeline):
        raise ValueError("--scheduler applies to stock DDPM pipelines only: drop it (use --num_inference_steps for fewer steps).")
    pipeline.set_progress_bar_config(leave=False)
    return pipeline.to(device)


def is_class_conditional(pipeline) -> bool:
    """Whether the pipeline takes class labels (a cluster-conditional one draws its own)."""
    return num_classes_of(pipeline.unet) is not None and not isinstance(pipeline, ClusterConditionalDDPMPipeline)


def guidance_kwargs(pipeline, guidance_scale: float | None) -> dict:
    """The pipeline's `guidance_scale` for a --guidance_scale given (or None): classifier-free guidance's w for
    class-conditional pipelines (default 1, the plain conditional model), autoguidance's for autoguided ones (default
    the w they were saved with; 1 is the main model alone). Refused for any other pipeline."""
    if isinstance(pipeline, (AutoguidedDDPMPipeline, ClusterConditionalDDPMPipeline)):
        return {"guidance_scale": pipeline.config.guidance_scale if guidance_scale is None else guidance_scale}
    if is_class_conditional(pipeline):
        return {"guidance_scale": 1.0 if guidance_scale is None else guidance_scale}
    if guidance_scale is not None:
        raise ValueError("--guidance_scale applies to class-conditional pipelines (trained with --class_conditional) and "
                         "autoguided ones only: drop it.")
    return {}


def class_labels_for(pipeline, class_labels: list[str] | None, per_class: int) -> list[int] | None:
    """The intended class of each image: `per_class` of each class asked for (indices or names; default, or "all":
    every class, in order); None for a pipeline that is not class-conditional (which must not be given labels)."""
    if not is_class_conditional(pipeline):  # a cluster-conditional pipeline draws its own clusters
        if class_labels is not None:
            raise ValueError("--class_labels applies to class-conditional pipelines only (trained with --class_conditional): drop it.")
        return None
    num_classes = num_classes_of(pipeline.unet)
    if class_labels is None or class_labels == ["all"]:
        classes = list(range(num_classes))
    else:
        names = getattr(pipeline.config, "class_names", None)
        try:
            classes = [class_index(label, names, num_classes) for label in class_labels]
        except ValueError as error:
            raise ValueError(f"--class_labels: {error}") from None
    return [label for label in classes for _ in range(per_class)]


def labels_for_samples(pipeline, class_labels: list[str] | None, num_samples: int) -> list[int]:
    """`num_samples // K` images of each of the K classes asked for (default: all), for scoring a class-conditional
    pipeline on about `num_samples` images."""
    classes = len(set(class_labels_for(pipeline, class_labels or ["all"], 1)))
    if num_samples < classes:
        raise ValueError(f"--num_samples {num_samples} is fewer than the {classes} classes drawn: raise it.")
    return class_labels_for(pipeline, class_labels or ["all"], num_samples // classes)


def generate_batches(pipeline, num_images: int, batch_size: int, seed: int, num_inference_steps: int | None,
                     class_labels: list[int] | None = None, **kwargs) -> Iterator[np.ndarray]:
    """uint8 images (n, H, W, C), one batch at a time, so that callers can write each as it is made.

    `class_labels` (class-conditional pipelines): the class of each of the N images; `kwargs` go to the pipeline
    (e.g. guidance_scale, or a cold pipeline's algorithm and noise). A cluster-conditional pipeline's clusters are
    drawn for all N at once, from the first batch's generator before its noise, so that the set, not each batch, is
    in proportion (with one batch: the pipeline's own call)."""
    if num_inference_steps:
        kwargs["num_inference_steps"] = num_inference_steps
    for batch_index, start in enumerate(tqdm(range(0, num_images, batch_size), desc="sampling")):
        generator = torch.Generator().manual_seed(seed + batch_index)
        size = min(batch_size, num_images - start)
        if batch_index == 0 and isinstance(pipeline, ClusterConditionalDDPMPipeline) and class_labels is None:
            class_labels = pipeline.draw_cluster_labels(num_images, generator, kwargs.pop("cluster_draws", None))
        if class_labels is not None:
            kwargs["class_labels"] = class_labels[start : start + size]
        images = np.asarray(pipeline(batch_size=size, generator=generator, output_type="np", **kwargs).images)
        check_images(images, batch_index + 1)
        yield (images * 255).round().astype(np.uint8)


def generate(pipeline, num_images: int, batch_size: int, seed: int, num_inference_steps: int | None,
             class_labels: list[int] | None = None, **kwargs) -> np.ndarray:
    """All the images of `generate_batches` in one array (N, H, W, C), for callers that need them together."""
    return np.concatenate(list(generate_batches(pipeline, num_images, batch_size, seed, num_inference_steps, class_labels, **kwargs)))


@torch.no_grad()
def draw(pipeline, num_images: int, generator: torch.Generator, num_inference_steps: int | None = None,
         sampler: str = DEFAULT_SAMPLER, class_labels: torch.Tensor | None = None, progress: str | None = None,
         **kwargs) -> torch.Tensor:
    """`num_images` images in [-1, 1], (N, C, H, W), in one pipeline call from `generator` (the trainer's sample
    grids and evaluation): with `sampler` where the pipeline takes one (`use_sampler`), every level for cold
    pipelines. `progress`: the name of a bar over the steps (terminals only); `kwargs` go to the pipeline."""
    pipeline.set_progress_bar_config(desc=progress, leave=False, disable=True if progress is None else None)
    steps = use_sampler(pipeline, sampler, num_inference_steps)
    if class_labels is not None:
        kwargs["class_labels"] = class_labels
    images = pipeline(batch_size=num_images, generator=generator, num_inference_steps=steps, output_type="np", **kwargs).images
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


@dataclass
class Restorations:
    """Conditional cold-diffusion sampling: `images` the restorations, uint8 (N, C, H, W); `figure` the four columns
    of the first images."""

    images: torch.Tensor
    figure: Image.Image


@torch.no_grad()
def restore(pipeline, originals: torch.Tensor, batch_size: int, seed: int, num_inference_steps: int | None = None,
            class_labels: list[int] | None = None, figure_rows: int = FIGURE_ROWS, **kwargs) -> Restorations:
    """Degrade each uint8 original (N, C, H, W) to level T and restore it with a cold-diffusion pipeline.

    `class_labels` (class-conditional restorers): the class each image is restored as; `kwargs` go to the pipeline
    (algorithm, noise, guidance_scale)."""
    restored, figure = [], None
    for batch_index, start in enumerate(range(0, len(originals), batch_size)):
        batch = originals[start : start + batch_size]
        labels = {} if class_labels is None else {"class_labels": class_labels[start : start + len(batch)]}
        generator = torch.Generator().manual_seed(seed + batch_index)
        output = pipeline(images=batch.float() / 127.5 - 1, generator=generator, num_inference_steps=num_inference_steps,
                          output_type="pt", **labels, **kwargs)
        check_images(output.images, batch_index + 1)
        restored.append((output.images.cpu() * 255).round().to(torch.uint8))
        if figure is None:
            figure = four_columns(output, figure_rows)
    return Restorations(torch.cat(restored), figure)
