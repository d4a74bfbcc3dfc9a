"""diffusion-lab: train, compare and share image diffusion models with Accelerate and Diffusers."""

from .models import CourseworkCNN
from .pipelines.export import load_pipeline, save_pipeline

__version__ = "0.1.0"
__all__ = ["CourseworkCNN", "load_pipeline", "save_pipeline"]
