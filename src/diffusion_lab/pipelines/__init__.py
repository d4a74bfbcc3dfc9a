"""Pipelines of our own: they travel with saved models as remote code."""

from .. import degradations  # noqa: F401  (the classes a saved ColdDiffusionPipeline names, for from_pretrained)
from .cold_start_distribution import GaussianMixture
from .pipeline_autoguided import AutoguidedDDPMPipeline
from .pipeline_class_conditional import ClassConditionalDDPMPipeline
from .pipeline_cluster_conditional import ClusterConditionalDDPMPipeline
from .pipeline_cold_diffusion import ColdDiffusionPipeline, ColdDiffusionPipelineOutput
from .pipeline_entropy_scaled import EntropyScaledDDPMPipeline

__all__ = ["AutoguidedDDPMPipeline", "ClassConditionalDDPMPipeline", "ClusterConditionalDDPMPipeline", "ColdDiffusionPipeline", "ColdDiffusionPipelineOutput", "EntropyScaledDDPMPipeline", "GaussianMixture"]
