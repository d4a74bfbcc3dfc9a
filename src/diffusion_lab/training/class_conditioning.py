"""Class-conditional training with classifier-free guidance (Ho & Salimans 2022), shared by both objectives.

The label of each training image is embedded and added to the time embedding (`num_class_embeds = K + 1`); with
probability --label_dropout it is replaced by the null class K, so that one model learns both the conditional
and the unconditional prediction that guided sampling combines.
"""

from __future__ import annotations

import torch


class ClassConditioning:
    """Mixed into an objective: which classes it was trained on and how labels are dropped."""

    class_names: list[str] | None = None
    label_dropout: float = 0.0

    def use_classes(self, class_names: list[str], label_dropout: float) -> None:
        self.class_names = list(class_names)
        self.label_dropout = label_dropout

    @property
    def labels_in_grid(self) -> bool:
        """Whether sample grids pass labels to the pipeline (a row per class)."""
        return self.class_names is not None

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def drop_labels(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each label replaced by the null class (index K) with probability `label_dropout`; `generator` (on CPU)
        fixes which, e.g. for validation, else the global RNG draws (restored on resume, so resumes are exact)."""
        if self.label_dropout == 0:
            return labels
        if generator is not None:
            draws = torch.rand(labels.shape, generator=generator).to(labels.device)
        else:
            draws = torch.rand(labels.shape, device=labels.device)
        return torch.where(draws < self.label_dropout, torch.full_like(labels, self.num_classes), labels)

    def grid_labels(self, num_images: int, device=None) -> torch.Tensor | None:
        """Labels for a sample grid: the classes in order, an equal share each (None where `labels_in_grid` is not)."""
        if not self.labels_in_grid:
            return None
        return (torch.arange(num_images) * self.num_classes // num_images).to(device)
