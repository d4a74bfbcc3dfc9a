"""Unconditional image generation for entropy-scaled diffusion (DES).

diffusers' DDPMPipeline always starts from unit Gaussian noise; a DES model was trained with noise of scale s,
so this pipeline starts from `scheduler.init_noise_sigma` (s for EntropyScaledDDPMScheduler, 1 for stock
schedulers) and otherwise runs the DDPM loop. It imports only torch and diffusers, so it travels with a saved
pipeline as remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


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
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            sample_size = (sample_size, sample_size)
        image_shape = (batch_size, self.unet.config.in_channels, *sample_size)
        device = self._execution_device

        self.scheduler.set_timesteps(num_inference_steps)
        image = randn_tensor(image_shape, generator=generator, device=device, dtype=self.unet.dtype)
        # z_T ~ N(0, s^2): the scale of the noise the model was trained with.
        image = image * self.scheduler.init_noise_sigma

        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = self.unet(model_input, t).sample
            image = self.scheduler.step(model_output, t, image, generator=generator).prev_sample

        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)

        self.maybe_free_model_hooks()

        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
