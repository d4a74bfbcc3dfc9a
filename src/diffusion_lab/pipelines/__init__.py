"""Pipelines of our own: they travel with saved models as remote code."""

from .pipeline_entropy_scaled import EntropyScaledDDPMPipeline

__all__ = ["EntropyScaledDDPMPipeline"]
