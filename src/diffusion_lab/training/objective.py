"""What the training loop needs from an objective, the one thing that differs between DDPM and cold diffusion.

An objective says what is learnt: the loss of a batch, the pipeline that is saved, and how that pipeline draws
the sample grids. It may also learn something besides the model (cold diffusion's start statistics), which then
travels in checkpoints as its `state_dict`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from .class_conditioning import ClassConditioning

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}


class Objective(ClassConditioning, ABC):
    """The interface `training.loop.Trainer` is written against (class conditioning comes with it)."""

    default_loss: str  # the --loss when none is given
    # (w, guide fraction) where the run keeps an autoguidance guide (training.autoguidance); DDPM only.
    autoguidance: tuple[float, float] | None = None
    num_clusters = 0  # K where the run conditions on K k-means clusters of its images (`use_clusters`); DDPM only

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """T: the model's timestep (level) embedding must take 0..T."""

    @abstractmethod
    def loss(self, model, clean: torch.Tensor, generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss on a batch of clean images in [-1, 1]; `generator` (on CPU) fixes every random draw (validation);
        `class_labels` for class-conditional runs."""

    @abstractmethod
    def pipeline(self, model, guide=None) -> DiffusionPipeline:
        """The pipeline that is saved, around `model` (and `guide`, the autoguidance guide, where `autoguidance` is set)."""

    def sampling_options(self) -> dict:
        """How the trainer draws sample grids from `pipeline` (keyword arguments of `sampling.draw`)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint keeps besides the model (`objective.safetensors`); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""
