"""FD-DINOv2: the Fréchet distance in DINOv2 feature space (Stein et al., NeurIPS 2023), computed with `transformers`.

Stein et al. found Inception-v3 FID to disagree with human judgement on modern generators and recommend the
Fréchet distance of DINOv2 ViT-L/14 features (the CLS token) instead. This is the project's use of `transformers`:
`Dinov2Model` from a local folder or the Hugging Face cache (never downloaded by the evaluation itself); where the
weights are absent the metric is skipped with a note, as Inception FID is.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DINOV2 = "facebook/dinov2-large"  # ViT-L/14, the model of Stein et al.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Dinov2Features(nn.Module):
    """Images in [-1, 1] (1 or 3 channels) -> DINOv2 CLS features, as the `feature` of torchmetrics' FID.

    Preprocessing as DINOv2's image processor: RGB, resized to `image_size` (224, bicubic), ImageNet mean/std.
    """

    def __init__(self, model: nn.Module, image_size: int = 224):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.num_features = model.config.hidden_size  # torchmetrics reads the size here instead of probing
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images.float() + 1) / 2
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True)
        pixel_values = (images.clamp(0, 1) - self.mean) / self.std
        return self.model(pixel_values=pixel_values).pooler_output


def load_dinov2(name_or_path: str = DEFAULT_DINOV2) -> tuple[nn.Module | None, str | None]:
    """(model, None), or (None, why FD-DINOv2 is skipped and how to enable it). Only local files are read."""
    if importlib.util.find_spec("transformers") is None:
        return None, "FD-DINOv2 skipped: transformers is not installed. Enable with `pip install transformers`."
    from transformers import Dinov2Model

    try:
        return Dinov2Model.from_pretrained(name_or_path, local_files_only=True), None
    except (OSError, ValueError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0][:160]
        return None, (
            f"FD-DINOv2 skipped: no DINOv2 weights for {name_or_path!r} in a local folder or the Hugging Face cache "
            f"({reason}). Enable by downloading them once (`huggingface-cli download {DEFAULT_DINOV2}`) or pass "
            "--dinov2_model PATH."
        )
