"""Unconditional image generation with autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad
version of itself"): the model's prediction is pushed away from that of a weaker model of the same data.

Classifier-free guidance needs labels; autoguidance guides an unconditional model by a worse one, e.g. the same
run's EMA weights from earlier in training, whose errors are the main model's, only larger:
out = out_guide + w (out_main - out_guide). w = 1 is the main model alone. It imports only torch and diffusers (and
its sibling `ancestral_sampling.py`), so it travels with a saved pipeline as remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .ancestral_sampling import ancestral_sample, image_pipeline_output


def autoguided_prediction(main: torch.Tensor, guide: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """out_guide + w (out_main - out_guide), in the main model's dtype."""
    guide = guide.to(main.dtype)
    return guide + guidance_scale * (main - guide)


class AutoguidedDDPMPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation guided by a weaker model of the same noise process.

    Parameters:
        unet ([`UNet2DModel`] or any model returning `.sample`): the model to sample from.
        guide_unet ([`UNet2DModel`] or any model returning `.sample`): the weaker model (e.g. an earlier EMA of the
            same run), trained with the same scheduler and image shape.
        scheduler ([`SchedulerMixin`]): a DDPM-style scheduler (DDPM, DDIM, DPM-Solver ...).
        guidance_scale (`float`, defaults to 2.0): the default w of `__call__`.
    """

    model_cpu_offload_seq = "unet->guide_unet"

    def __init__(self, unet, guide_unet, scheduler, guidance_scale: float = 2.0):
        super().__init__()
        self.register_modules(unet=unet, guide_unet=guide_unet, scheduler=scheduler)
        self.register_to_config(guidance_scale=float(guidance_scale))

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        guidance_scale: float | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Args:
            guidance_scale (`float`, *optional*): w in out_guide + w (out_main - out_guide); default the pipeline's
                `config.guidance_scale`. 1 is the main model alone; each step costs two model calls otherwise.
            batch_size, generator, num_inference_steps, output_type, return_dict: as in [`DDPMPipeline.__call__`].

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple` whose first element is the images.
        """
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale

        def predict(model_input, t):
            main = self.unet(model_input, t).sample
            if scale == 1:
                return main
            return autoguided_prediction(main, self.guide_unet(model_input, t).sample, scale)

        image = ancestral_sample(self, predict, batch_size, generator, num_inference_steps)
        return image_pipeline_output(self, image, output_type, return_dict)
