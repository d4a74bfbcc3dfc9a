"""Unconditional image generation from a cluster-conditional model: each image's cluster is drawn by the clusters'
sizes, then the model is sampled given it (Bao et al. 2022; Adaloglou et al. 2024), optionally autoguided.

A model trained by `train_ddpm.py --cluster_conditioning K` takes the k-means cluster of its training image as a class
label (`num_class_embeds = K + 1`, the last the null class). Drawing the cluster with the clusters' training shares
makes the pipeline an unconditional generator again: it is called as `DDPMPipeline` is, with no labels. With a
`guide_unet` (the run's earlier EMA) each step is autoguided as in `AutoguidedDDPMPipeline`, both models given the
image's cluster. It imports only torch and diffusers (and its siblings), so it travels with a saved pipeline as
remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .ancestral_sampling import ancestral_sample, image_pipeline_output
from .pipeline_autoguided import autoguided_prediction


def draw_clusters(cluster_sizes: list, batch_size: int, generator, device) -> torch.Tensor:
    """One cluster index per image, drawn with probability its share of the training images; from `generator` (one,
    or a list with one per image) so that seeded calls repeat."""
    shares = torch.tensor(cluster_sizes, dtype=torch.float64)
    if isinstance(generator, list):
        if len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators were given for batch_size {batch_size}: give one per image.")
        draws = [torch.multinomial(shares.to(g.device), 1, generator=g) for g in generator]
        return torch.cat([draw.cpu() for draw in draws]).to(device)
    on = generator.device if generator is not None else "cpu"
    return torch.multinomial(shares.to(on), batch_size, replacement=True, generator=generator).to(device)


class ClusterConditionalDDPMPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation from a model conditioned on k-means clusters of its training images.

    Parameters:
        unet ([`UNet2DModel`] or any model taking `class_labels`): the denoiser; `config.num_class_embeds` is K + 1.
        scheduler ([`SchedulerMixin`]): a DDPM-style scheduler (DDPM, DDIM, DPM-Solver ...).
        guide_unet ([`UNet2DModel`], *optional*): a weaker model of the same clusters (e.g. an earlier EMA of the same
            run) for autoguidance; None: the model alone.
        cluster_sizes (`list[float]`): each cluster's share of the training images (K values summing to 1); required.
        guidance_scale (`float`, defaults to 1.0): the default autoguidance w of `__call__`.
    """

    model_cpu_offload_seq = "unet->guide_unet"
    _optional_components = ["guide_unet"]

    def __init__(self, unet, scheduler, guide_unet=None, cluster_sizes: list | None = None, guidance_scale: float = 1.0):
        super().__init__()
        # A keyword with a default: diffusers takes every parameter without one for a component.
        if cluster_sizes is None or len(cluster_sizes) != unet.config.num_class_embeds - 1:
            given = "no cluster sizes were" if cluster_sizes is None else f"{len(cluster_sizes)} cluster sizes were"
            raise ValueError(f"{given} given for a model of {unet.config.num_class_embeds - 1} clusters.")
        self.register_modules(unet=unet, scheduler=scheduler, guide_unet=guide_unet)
        self.register_to_config(cluster_sizes=[float(size) for size in cluster_sizes], guidance_scale=float(guidance_scale))

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
            guidance_scale (`float`, *optional*): autoguidance w in out_guide + w (out_main - out_guide); default the
                pipeline's `config.guidance_scale`. 1 is the main model alone; other values need a `guide_unet`.
            batch_size, generator, num_inference_steps, output_type, return_dict: as in [`DDPMPipeline.__call__`].

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple` whose first element is the images.
        """
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if scale != 1 and self.guide_unet is None:
            raise ValueError(f"guidance_scale {scale:g} needs a guide model; this pipeline has none: pass guidance_scale=1.")
        clusters = draw_clusters(self.config.cluster_sizes, batch_size, generator, self._execution_device)

        def predict(model_input, t):
            main = self.unet(model_input, t, class_labels=clusters).sample
            if scale == 1:
                return main
            return autoguided_prediction(main, self.guide_unet(model_input, t, class_labels=clusters).sample, scale)

        image = ancestral_sample(self, predict, batch_size, generator, num_inference_steps)
        return image_pipeline_output(self, image, output_type, return_dict)
