"""The data path of diffusers' `examples/unconditional_image_generation/train_unconditional.py`, without torchvision.

That script decodes every image on every epoch: a `datasets` dataset with `set_transform`, each item converted
to RGB and passed through torchvision's Resize(bilinear) -> CenterCrop or RandomCrop -> RandomHorizontalFlip
(when asked) -> ToTensor -> Normalize([0.5], [0.5]), batched by a shuffling `torch.utils.data.DataLoader`.
torchvision cannot be installed next to this torch, so the five transforms are re-implemented here with PIL and
numpy, following torchvision's semantics for PIL inputs (including its early return when no resize is needed).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class Resize:
    """Shorter side to `size` (aspect ratio kept), bilinear; images already at that size are returned as they are."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        if short == self.size:
            return image
        new_short, new_long = self.size, int(self.size * long / short)
        new_size = (new_short, new_long) if width <= height else (new_long, new_short)
        return image.resize(new_size, Image.BILINEAR)


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        left, top = int(round((width - self.size) / 2.0)), int(round((height - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


class RandomCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        top = int(torch.randint(0, height - self.size + 1, (1,)))
        left = int(torch.randint(0, width - self.size + 1, (1,)))
        return image.crop((left, top, left + self.size, top + self.size))


class RandomHorizontalFlip:
    def __call__(self, image: Image.Image) -> Image.Image:
        return image.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1) < 0.5 else image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 HWC image -> float CHW tensor in [0, 1]."""
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)


def normalize_half(tensor: torch.Tensor) -> torch.Tensor:
    """Normalize([0.5], [0.5]): [0, 1] -> [-1, 1]."""
    return tensor.sub(0.5).div(0.5)


class ExampleAugmentations:
    """The example's `augmentations` pipeline for one PIL image."""

    def __init__(self, resolution: int, center_crop: bool, random_flip: bool):
        self.steps = [Resize(resolution), CenterCrop(resolution) if center_crop else RandomCrop(resolution)]
        if random_flip:
            self.steps.append(RandomHorizontalFlip())

    def __call__(self, image: Image.Image) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return normalize_half(to_tensor(image))


def example_dataloader(dataset_path: str, batch_size: int, resolution: int, center_crop: bool, random_flip: bool,
                       num_workers: int, image_column: str = "image") -> torch.utils.data.DataLoader:
    """The example's training DataLoader: batches of {"input": (B, 3, H, W) in [-1, 1]}, decoded per item."""
    import datasets

    dataset = datasets.load_dataset(dataset_path, split="train")
    augmentations = ExampleAugmentations(resolution, center_crop, random_flip)

    def transform_images(examples):
        # The example converts every image to RGB, grayscale included.
        return {"input": [augmentations(image.convert("RGB")) for image in examples[image_column]]}

    dataset.set_transform(transform_images)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
