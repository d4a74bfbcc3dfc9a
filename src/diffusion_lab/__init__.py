"""diffusion-lab: train, compare and share image diffusion models with Accelerate and Diffusers."""

from .models import CourseworkCNN

__version__ = "0.1.0"
__all__ = ["CourseworkCNN"]
