"""The small MNIST digit classifier whose features and predictions score generated digits.

It ships with the project (weights/digit_classifier.safetensors, trained by
`diffusion-lab train-digit-classifier`), so the digit metrics work offline, where
Inception-v3 weights are often unavailable and in any case were trained on colour photographs, not digits.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "digit_classifier.safetensors"


class DigitClassifier(nn.Module):
    """Two conv blocks (conv 3x3 -> batch norm -> ReLU -> 2x2 max-pool), a hidden linear layer, the 10 logits.

    Input: 1x28x28 images in [-1, 1]. `features` returns the hidden layer (after ReLU), the space in
    which the Fréchet distance is measured.
    """

    def __init__(self, conv_channels: tuple = (32, 64), num_features: int = 128, num_classes: int = 10):
        super().__init__()
        self.config = {"conv_channels": list(conv_channels), "num_features": num_features, "num_classes": num_classes}
        widths = [1, *conv_channels]
        self.encoder = nn.Sequential(
            *(
                layer
                for c_in, c_out in zip(widths[:-1], widths[1:])
                for layer in (nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))
            ),
            nn.Flatten(),
            nn.Linear(widths[-1] * 7 * 7, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def save(self, weights_path: str | Path, training_record: dict) -> None:
        """Write the weights (safetensors) and, beside them, a json with the config and how they were trained."""
        weights_path = Path(weights_path)
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: tensor.contiguous() for name, tensor in self.state_dict().items()}, weights_path)
        record = {"config": self.config, "training": training_record}
        weights_path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def from_file(cls, weights_path: str | Path = SHIPPED_WEIGHTS) -> "DigitClassifier":
        """Load a classifier saved by `save` (the shipped one by default), in eval mode."""
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise ValueError(
                f"Digit classifier weights not found at {weights_path}: "
                "train them with `diffusion-lab train-digit-classifier`."
            )
        record = json.loads(weights_path.with_suffix(".json").read_text())
        classifier = cls(**record["config"])
        classifier.load_state_dict(load_file(weights_path))
        return classifier.eval().requires_grad_(False)


class DigitFeatures(nn.Module):
    """The classifier's hidden features, as the `feature` extractor of torchmetrics' FrechetInceptionDistance."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        # torchmetrics reads the feature size from here instead of probing with a dummy 299x299 image.
        self.num_features = classifier.config["num_features"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class DigitLogits(nn.Module):
    """The classifier's logits, as the `feature` extractor of torchmetrics' InceptionScore."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)
