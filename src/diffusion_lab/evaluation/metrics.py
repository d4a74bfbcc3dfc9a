"""Sample-quality metrics on images in [-1, 1], computed with torchmetrics.

- Digit metrics (1x28x28 only), in the shipped digit classifier's space: Fréchet distance of its hidden
  features, classifier Inception Score (exp E[KL(p(y|x) || p(y))], between 1 and 10), the predicted-class
  histogram and the mean confidence.
- PSNR and SSIM, per image pair, averaged.
- FID and Inception Score (mean ± std over 10 splits) on Inception-v3 (`inception.py`), when its weights are present.
"""

import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from tqdm.auto import tqdm

from .digit_classifier import DigitClassifier, DigitFeatures, DigitLogits
from .inception import (
    INCEPTION_WEIGHTS_FILE,
    FIDInceptionV3,
    frechet_distance,
    inception_outputs,
    inception_score_splits,
)

# The seed of the one random draw in torchmetrics' InceptionScore.compute (a permutation of the images).
INCEPTION_SCORE_SEED = 0
# Images in [-1, 1] span 2: the peak signal for PSNR and the data range for SSIM.
DATA_RANGE = 2.0


def _batches(images: torch.Tensor, batch_size: int, device: str, description: str):
    # disable=None: a bar on terminals only, not in logs.
    for batch in tqdm(images.split(batch_size), desc=description, leave=False, disable=None):
        yield batch.to(device)


@torch.no_grad()
def frechet_distances(
    feature: int | nn.Module,
    reference: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    batch_size: int = 256,
    device: str = "cpu",
    **fid_kwargs,
) -> dict[str, float]:
    """Fréchet distance of each candidate set to `reference` in the space of `feature` (torchmetrics' argument:
    a feature extractor module, or an Inception-v3 feature size).

    The reference features are extracted once and kept (`reset_real_features=False`) across candidates.
    `fid_kwargs` go to FrechetInceptionDistance (e.g. the Inception weights path).
    """
    metric = FrechetInceptionDistance(feature=feature, reset_real_features=False, **fid_kwargs).to(device)
    for batch in _batches(reference, batch_size, device, "reference features"):
        metric.update(batch, real=True)
    distances = {}
    for name, images in candidates.items():
        metric.reset()
        for batch in _batches(images, batch_size, device, f"{name} features"):
            metric.update(batch, real=False)
        distances[name] = metric.compute().item()
    return distances


@torch.no_grad()
def inception_score(logits_extractor: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str = "cpu"):
    """exp E_x[KL(p(y|x) || p(y))] over the whole set (one split): 1 for one class, the class count at most."""
    with warnings.catch_warnings():
        # torchmetrics warns that it keeps every logit in memory: 10 or 1008 floats per image here.
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=logits_extractor, splits=1).to(device)
    for batch in _batches(images, batch_size, device, "class probabilities"):
        metric.update(batch)
    # compute() shuffles the images with an unseeded draw from the global generator (torch.randperm), and the order
    # changes the float sums in the 7th significant digit: fork the generator (training's RNG stays untouched) and
    # seed it, so that the same images always give the same score.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(INCEPTION_SCORE_SEED)
        # With one split the spread across splits is undefined (torch warns computing it); only the mean is used.
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
        score, _ = metric.compute()
    return score.item()


@torch.no_grad()
def predicted_class_statistics(
    classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> tuple[list[float], float]:
    """Fraction of images predicted as each class, and the mean probability of the predicted class."""
    probabilities = torch.cat(
        [classifier(batch).softmax(dim=1).cpu() for batch in _batches(images, batch_size, device, "predictions")]
    )
    confidence, predicted = probabilities.max(dim=1)
    histogram = torch.bincount(predicted, minlength=probabilities.shape[1]) / len(images)
    return histogram.tolist(), confidence.mean().item()


@torch.no_grad()
def digit_metrics(
    classifier: DigitClassifier,
    reference: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, dict]:
    """All classifier metrics of each candidate set: Fréchet distance to `reference`, IS, class histogram,
    mean confidence."""
    classifier = classifier.to(device)
    distances = frechet_distances(DigitFeatures(classifier), reference, candidates, batch_size, device)
    results = {}
    for name, images in candidates.items():
        histogram, confidence = predicted_class_statistics(classifier, images, batch_size, device)
        results[name] = {
            "frechet_distance": distances[name],
            "inception_score": inception_score(DigitLogits(classifier), images, batch_size, device),
            "class_histogram": histogram,
            "mean_confidence": confidence,
        }
    return results


@torch.no_grad()
def paired_psnr_ssim(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR (dB) and SSIM of each image against the target at the same index. Identical images give
    PSNR = inf (zero error) and SSIM = 1."""
    psnr = peak_signal_noise_ratio(images, targets, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(images, targets, data_range=DATA_RANGE, reduction="none")
    return psnr, ssim


@torch.no_grad()
def psnr_ssim_against_references(
    images: torch.Tensor, references: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> tuple[float, float]:
    """Mean PSNR and SSIM over every (image, reference) pair, as the seeds scored samples against 100
    validation images."""
    references = references.to(device)
    # A chunk of images is paired with every reference: about 8 x `batch_size` pairs at once.
    chunk_size = max(1, 8 * batch_size // len(references))
    psnr_sum = ssim_sum = 0.0
    for chunk in _batches(images, chunk_size, device, "PSNR/SSIM"):
        pairs = chunk.repeat_interleave(len(references), dim=0)
        psnr, ssim = paired_psnr_ssim(pairs, references.repeat(len(chunk), 1, 1, 1))
        psnr_sum += psnr.sum().item()
        ssim_sum += ssim.sum().item()
    num_pairs = len(images) * len(references)
    return psnr_sum / num_pairs, ssim_sum / num_pairs


def cached_inception_weights() -> Path:
    """Where torch-fidelity (and torchmetrics' FID) keep the Inception weights: torch hub's checkpoints folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def inception_unavailable_reason(weights_path: str | Path | None = None) -> str | None:
    """Why Inception-v3 FID/IS cannot run here (with how to enable them), or None when they can."""
    if weights_path is not None:
        return None if Path(weights_path).is_file() else f"FID and Inception Score skipped: Inception weights file {weights_path} does not exist."
    cached = cached_inception_weights()
    if not cached.is_file():
        return (
            f"FID and Inception Score on Inception-v3 skipped: no weights at {cached}. Enable by passing "
            f"--inception_weights PATH ({INCEPTION_WEIGHTS_FILE}, torch-fidelity's file, or a .safetensors copy) or by "
            "putting that file there."
        )
    return None


@torch.no_grad()
def inception_metrics(
    reference: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    weights_path: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, dict]:
    """FID (2048-d pool features) against `reference` and Inception Score (mean and std over 10 splits) of each
    candidate set, images in [-1, 1]; check availability first with `inception_unavailable_reason`."""
    network = FIDInceptionV3.from_file(weights_path or cached_inception_weights())
    reference_pool, _ = inception_outputs(network, reference, batch_size, device)
    results = {}
    for name, images in candidates.items():
        pool, logits = inception_outputs(network, images, batch_size, device)
        score, spread = inception_score_splits(logits)
        results[name] = {"fid": frechet_distance(pool, reference_pool), "inception_score": score, "inception_score_std": spread}
    return results


@torch.no_grad()
def class_accuracy(
    classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> tuple[float, list[float | None]]:
    """How often the classifier reads each image as its intended label: overall, and per class (None for a
    class without images)."""
    classifier = classifier.to(device)
    predicted = torch.cat([classifier(batch).argmax(dim=1).cpu() for batch in _batches(images, batch_size, device, "class accuracy")])
    labels = labels.cpu().long()
    correct = (predicted == labels).float()
    num_classes = classifier.config["num_classes"]
    per_class = [correct[labels == k].mean().item() if (labels == k).any() else None for k in range(num_classes)]
    return correct.mean().item(), per_class

