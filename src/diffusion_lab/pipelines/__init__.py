from .. import degradations  # noqa: F401  (the classes a saved ColdDiffusionPipeline names, for from_pretrained)
from .cold_start_distribution import GaussianMixture
from .pipeline_cold_diffusion import ColdDiffusionPipeline, ColdDiffusionPipelineOutput

__all__ = ["ColdDiffusionPipeline", "ColdDiffusionPipelineOutput", "GaussianMixture"]
