"""The DDPM-style sampling loop shared by our image pipelines, from noise of `scheduler.init_noise_sigma`.

diffusers' `DDPMPipeline` always starts from unit Gaussian noise; ours start from `scheduler.init_noise_sigma` (1 for
stock schedulers, s for the entropy-scaled one), so one loop serves every noise schedule and DDIM / DPM-Solver can be
swapped in. The pipelines differ only in the model's prediction, which they pass in as `predict(model_input, t)`.

This file imports only torch and diffusers: it travels with saved pipelines as remote code.
"""

from collections.abc import Callable

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


def ancestral_sample(
    pipeline: DiffusionPipeline,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    generator: torch.Generator | list[torch.Generator] | None,
    num_inference_steps: int,
) -> torch.Tensor:
    """`batch_size` images in [0, 1] (N, C, H, W) drawn with `pipeline.scheduler`, shaped as `pipeline.unet`'s samples."""
    unet, scheduler = pipeline.unet, pipeline.scheduler
    sample_size = unet.config.sample_size
    if isinstance(sample_size, int):
        sample_size = (sample_size, sample_size)
    image_shape = (batch_size, unet.config.in_channels, *sample_size)

    scheduler.set_timesteps(num_inference_steps)
    image = randn_tensor(image_shape, generator=generator, device=pipeline._execution_device, dtype=unet.dtype)
    # z_T ~ N(0, s^2): the scale of the noise the model was trained with.
    image = image * scheduler.init_noise_sigma

    for t in pipeline.progress_bar(scheduler.timesteps):
        model_input = scheduler.scale_model_input(image, t)
        model_output = predict(model_input, t)
        image = scheduler.step(model_output, t, image, generator=generator).prev_sample

    return (image / 2 + 0.5).clamp(0, 1)


def image_pipeline_output(
    pipeline: DiffusionPipeline, image: torch.Tensor, output_type: str | None, return_dict: bool
) -> ImagePipelineOutput | tuple:
    """Images in [0, 1] as `output_type` asks ("pil", "np" or "pt"), returned as `DDPMPipeline.__call__` does."""
    if output_type != "pt":
        image = image.cpu().permute(0, 2, 3, 1).numpy()
        if output_type == "pil":
            image = pipeline.numpy_to_pil(image)

    pipeline.maybe_free_model_hooks()
    if not return_dict:
        return (image,)
    return ImagePipelineOutput(images=image)
