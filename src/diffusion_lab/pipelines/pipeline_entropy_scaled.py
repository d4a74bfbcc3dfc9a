"""Unconditional image generation for entropy-scaled diffusion (DES).

diffusers' DDPMPipeline always starts from unit Gaussian noise; a DES model was trained with noise of scale s,
so this pipeline starts from `scheduler.init_noise_sigma` (s for EntropyScaledDDPMScheduler, 1 for stock
schedulers) and otherwise runs the DDPM loop (`ancestral_sampling.py`, shared with the class-conditional pipeline).
It imports only torch and diffusers (and that sibling), so it travels with a saved pipeline as remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .ancestral_sampling import ancestral_sample, image_pipeline_output


class EntropyScaledDDPMPipeline(DiffusionPipeline):
    r"""
    Pipeline for image generation with a DDPM-style scheduler whose initial noise is not unit Gaussian.

    Parameters:
        unet ([`UNet2DModel`] or any model returning `.sample`):
            A model to denoise the image; its config gives `sample_size` and `in_channels`.
        scheduler ([`SchedulerMixin`]):
            The scheduler the model was trained with, e.g. `EntropyScaledDDPMScheduler`.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate `batch_size` images; arguments as [`DDPMPipeline.__call__`].

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple` whose first element is the list of images.
        """
        def predict(model_input, t):
            return self.unet(model_input, t).sample

        image = ancestral_sample(self, predict, batch_size, generator, num_inference_steps)
        return image_pipeline_output(self, image, output_type, return_dict)
