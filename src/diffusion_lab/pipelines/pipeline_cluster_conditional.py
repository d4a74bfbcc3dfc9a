"""Unconditional image generation from a cluster-conditional model: each image's cluster is drawn by the clusters'
sizes, then the model is sampled given it (Bao et al. 2022; Adaloglou et al. 2024), optionally autoguided.

A model trained by `train_ddpm.py --cluster_conditioning K` takes the k-means cluster of its training image as a class
label (`num_class_embeds = K + 1`, the last the null class). Drawing the cluster with the clusters' training shares
makes the pipeline an unconditional generator again: it is called as `DDPMPipeline` is, with no labels. A batch's
clusters are stratified by default, each cluster in proportion to its share (`draw_clusters`); a set made in several
calls is stratified as a whole by drawing its clusters once (`draw_cluster_labels`) and passing each call its slice
as `class_labels`. With a
`guide_unet` (the run's earlier EMA) each step is autoguided as in `AutoguidedDDPMPipeline`, both models given the
image's cluster. It imports only torch and diffusers (and its siblings), so it travels with a saved pipeline as
remote code.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .ancestral_sampling import ancestral_sample, image_pipeline_output
from .pipeline_autoguided import autoguided_prediction

CLUSTER_DRAWS = ("stratified", "iid")
DEFAULT_CLUSTER_DRAWS = "stratified"


def check_cluster_draws(draws: str) -> str:
    if draws not in CLUSTER_DRAWS:
        raise ValueError(f"cluster_draws {draws!r} is not one of {', '.join(CLUSTER_DRAWS)}: pass one of them.")
    return draws


def draw_clusters(cluster_sizes: list, batch_size: int, generator, device, draws: str = DEFAULT_CLUSTER_DRAWS) -> torch.Tensor:
    """One cluster index per image, each drawn with probability its share of the training images, from `generator` so
    that seeded calls repeat.

    "stratified" (one generator): systematic sampling, the positions (u + i) / batch_size for one uniform u, each
    mapped to the cluster whose share covers it, in random order: every image's cluster has the same probability as
    an i.i.d. draw, but a batch holds each cluster floor(B * share) or ceil(B * share) times, as a real batch of the
    data would, where i.i.d. draws scatter the counts (at N = 1,000 that scatter alone costs a perfect model of MNIST
    a quarter of its digit FD: benchmarks/real_data_fd.py). "iid": independent draws. A list of generators (one per
    image, so that each image depends on its own only) always draws i.i.d.
    """
    check_cluster_draws(draws)
    shares = torch.tensor(cluster_sizes, dtype=torch.float64)
    if isinstance(generator, list):
        if len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators were given for batch_size {batch_size}: give one per image.")
        picks = [torch.multinomial(shares.to(g.device), 1, generator=g) for g in generator]
        return torch.cat([pick.cpu() for pick in picks]).to(device)
    on = generator.device if generator is not None else "cpu"
    if draws == "iid":
        return torch.multinomial(shares.to(on), batch_size, replacement=True, generator=generator).to(device)
    upper_edges = (shares.cumsum(0) / shares.sum()).to(on)
    offset = torch.rand(1, generator=generator, dtype=torch.float64, device=on)
    positions = (offset + torch.arange(batch_size, dtype=torch.float64, device=on)) / batch_size
    clusters = torch.searchsorted(upper_edges, positions, right=True).clamp(max=len(cluster_sizes) - 1)
    return clusters[torch.randperm(batch_size, generator=generator, device=on)].to(device)


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
        cluster_draws (`str`, defaults to "stratified"): how `__call__` draws a batch's clusters by default:
            "stratified" (each cluster in proportion to its share) or "iid" (see `draw_clusters`).
    """

    model_cpu_offload_seq = "unet->guide_unet"
    _optional_components = ["guide_unet"]

    def __init__(self, unet, scheduler, guide_unet=None, cluster_sizes: list | None = None, guidance_scale: float = 1.0,
                 cluster_draws: str = DEFAULT_CLUSTER_DRAWS):
        super().__init__()
        # A keyword with a default: diffusers takes every parameter without one for a component.
        if cluster_sizes is None or len(cluster_sizes) != unet.config.num_class_embeds - 1:
            given = "no cluster sizes were" if cluster_sizes is None else f"{len(cluster_sizes)} cluster sizes were"
            raise ValueError(f"{given} given for a model of {unet.config.num_class_embeds - 1} clusters.")
        self.register_modules(unet=unet, scheduler=scheduler, guide_unet=guide_unet)
        self.register_to_config(cluster_sizes=[float(size) for size in cluster_sizes], guidance_scale=float(guidance_scale),
                                cluster_draws=check_cluster_draws(cluster_draws))

    def draw_cluster_labels(self, num_images: int, generator=None, cluster_draws: str | None = None) -> torch.Tensor:
        """The clusters of a set of `num_images` (`draw_clusters`, by default as `config.cluster_draws` says), for a
        set made in several calls: a batch is stratified on its own, a set only when its clusters are drawn together."""
        draws = self.config.cluster_draws if cluster_draws is None else cluster_draws
        return draw_clusters(self.config.cluster_sizes, num_images, generator, self._execution_device, draws)

    def check_cluster_labels(self, class_labels, batch_size: int) -> torch.Tensor:
        clusters = torch.as_tensor(class_labels, device=self._execution_device).long()
        count = len(self.config.cluster_sizes)
        if clusters.shape != (batch_size,) or clusters.min() < 0 or clusters.max() >= count:
            raise ValueError(f"class_labels must be {batch_size} cluster indices from 0 to {count - 1}, one per image; got "
                             f"shape {tuple(clusters.shape)}: pass one cluster per image, or none to draw them.")
        return clusters

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        guidance_scale: float | None = None,
        cluster_draws: str | None = None,
        class_labels: torch.Tensor | list[int] | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Args:
            guidance_scale (`float`, *optional*): autoguidance w in out_guide + w (out_main - out_guide); default the
                pipeline's `config.guidance_scale`. 1 is the main model alone; other values need a `guide_unet`.
            cluster_draws (`str`, *optional*): "stratified" or "iid" (see `draw_clusters`); default the pipeline's
                `config.cluster_draws`.
            class_labels (`torch.Tensor` or `list[int]`, *optional*): each image's cluster, 0 to K - 1, e.g. this
                call's slice of `draw_cluster_labels` for a whole set; None: drawn here (`cluster_draws`).
            batch_size, generator, num_inference_steps, output_type, return_dict: as in [`DDPMPipeline.__call__`].

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple` whose first element is the images.
        """
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if scale != 1 and self.guide_unet is None:
            raise ValueError(f"guidance_scale {scale:g} needs a guide model; this pipeline has none: pass guidance_scale=1.")
        if class_labels is None:
            clusters = self.draw_cluster_labels(batch_size, generator, cluster_draws)
        else:
            clusters = self.check_cluster_labels(class_labels, batch_size)

        def predict(model_input, t):
            main = self.unet(model_input, t, class_labels=clusters).sample
            if scale == 1:
                return main
            return autoguided_prediction(main, self.guide_unet(model_input, t, class_labels=clusters).sample, scale)

        image = ancestral_sample(self, predict, batch_size, generator, num_inference_steps)
        return image_pipeline_output(self, image, output_type, return_dict)
