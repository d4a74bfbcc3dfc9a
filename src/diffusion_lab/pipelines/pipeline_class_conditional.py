"""Class-conditional image generation with classifier-free guidance, for any DDPM-style scheduler.

`DDPMPipeline` cannot pass class labels to the model; this pipeline does, for a `UNet2DModel(num_class_embeds=K+1)`
(or any model taking `class_labels`) trained by `train_ddpm.py --class_conditional`, the last label index being
the null class. It starts from noise of `scheduler.init_noise_sigma` (1 for stock schedulers, s for DES), so it
serves every noise schedule, and DDIM / DPM-Solver can be swapped in. It imports only torch and diffusers (and its
siblings `ancestral_sampling.py` and `class_guidance.py`), so it travels with a saved pipeline as remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .ancestral_sampling import ancestral_sample, image_pipeline_output
from .class_guidance import guided_prediction, num_classes_of, resolve_class_labels


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    r"""
    Pipeline for class-conditional image generation with classifier-free guidance.

    Parameters:
        unet ([`UNet2DModel`] or any model taking `class_labels`): the denoiser; `config.num_class_embeds` is
            K + 1 (K classes, then the null class).
        scheduler ([`SchedulerMixin`]): a DDPM-style scheduler (DDPM, DDIM, DPM-Solver, entropy-scaled ...).
        class_names (`list[str]`, *optional*): the name of each class, so that labels can be given by name.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, class_names: list | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=None if class_names is None else [str(name) for name in class_names])

    @property
    def num_classes(self) -> int:
        return num_classes_of(self.unet)

    @torch.no_grad()
    def __call__(
        self,
        class_labels=None,
        guidance_scale: float = 1.0,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Args:
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*): the class of each image, as an index
                0..K-1 or a class name; one value for the whole batch, or one per image. None: unconditional.
            guidance_scale (`float`, defaults to 1.0): w in out_u + w (out_c - out_u); 1 is the plain conditional
                model, 0 the unconditional one, larger values follow the label more closely at some diversity.
            batch_size (`int`, *optional*): number of images; default: the number of labels given, else 1.
            generator, num_inference_steps, output_type, return_dict: as in [`DDPMPipeline.__call__`].

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple` whose first element is the images.
        """
        device = self._execution_device
        labels = resolve_class_labels(class_labels, batch_size, self.config.class_names, self.num_classes, device)
        batch_size = len(labels) if labels is not None else (batch_size or 1)

        def predict(model_input, t):
            return guided_prediction(self.unet, model_input, t, labels, self.num_classes, guidance_scale)

        image = ancestral_sample(self, predict, batch_size, generator, num_inference_steps)
        return image_pipeline_output(self, image, output_type, return_dict)
