"""Sample-quality metrics on images in [-1, 1], computed with torchmetrics.

- Digit metrics (1x28x28 only), in the shipped digit classifier's space: Fréchet distance of its hidden
  features, classifier Inception Score (exp E[KL(p(y|x) || p(y))], between 1 and 10), the predicted-class
  histogram and the mean confidence.
- PSNR and SSIM, per image pair, averaged.
- FID and Inception Score on Inception-v3, only when torch-fidelity and the Inception weights are present.
"""

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from tqdm.auto import tqdm

from .digit_classifier import DigitClassifier, DigitFeatures, DigitLogits

# Where torch-fidelity caches the Inception-v3 weights it downloads (torch hub's checkpoints folder).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
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


def inception_unavailable_reason(weights_path: str | Path | None = None) -> str | None:
    """Why Inception-v3 FID/IS cannot run here (with how to enable them), or None when they can."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return (
            "FID and Inception Score on Inception-v3 skipped: torch-fidelity is not installed. "
            'Enable with `pip install ".[fid]"` (torch-fidelity and a torchvision matching your torch).'
        )
    if weights_path is not None:
        return None if Path(weights_path).is_file() else f"Inception weights file {weights_path} does not exist."
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if not cached.is_file():
        return (
            f"FID and Inception Score on Inception-v3 skipped: no weights at {cached}. Enable by running once "
            "online (torch-fidelity downloads them there) or pass --inception_weights PATH."
        )
    return None


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 with 3 channels, the input torchmetrics' Inception-v3 expects."""
    images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def inception_metrics(
    reference: torch.Tensor,
    candidates: dict[str, torch.Tensor],
    weights_path: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, dict]:
    """FID (2048-d pool features) and Inception Score of each candidate set; check availability first with
    `inception_unavailable_reason`."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    weights_path = None if weights_path is None else str(weights_path)
    distances = frechet_distances(
        2048,
        to_uint8_rgb(reference),
        {name: to_uint8_rgb(images) for name, images in candidates.items()},
        batch_size,
        device,
        feature_extractor_weights_path=weights_path,
    )
    logits = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["logits_unbiased"], feature_extractor_weights_path=weights_path
    )
    return {
        name: {
            "fid": distances[name],
            "inception_score": inception_score(logits, to_uint8_rgb(images), batch_size, device),
        }
        for name, images in candidates.items()
    }
