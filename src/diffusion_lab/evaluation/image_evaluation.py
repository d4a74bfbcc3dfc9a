"""Score a set of generated images against a reference set, next to the same scores for real images.

Every distance is reported with its floor: the value between two disjoint real subsets of the same size,
so that a number can be read ("digit_fd 4.1 against a real-vs-real 0.9"). Keys ending in `_real` hold
the metric computed on real images in place of the generated ones.
"""

import hashlib
import json
import math
from pathlib import Path

import torch

from ..data.sources import class_label_array
from .digit_classifier import DigitClassifier
from .dinov2 import Dinov2Features, load_dinov2
from .image_sources import load_dataset_images
from .inception import IS_SPLITS
from .metrics import (
    class_accuracy,
    digit_metrics,
    frechet_distances,
    inception_metrics,
    inception_unavailable_reason,
    paired_psnr_ssim,
    psnr_ssim_against_references,
)
from .pixel_range import to_signed_unit_range

# As in the seeds: each generated image is compared with this many validation images.
NUM_PSNR_REFERENCES = 100


_REAL_PSNR_SSIM: dict[str, tuple[float, float]] = {}


def real_psnr_ssim(stand_in: torch.Tensor, references: torch.Tensor, batch_size: int, device: str) -> tuple[float, float]:
    """The real-versus-real PSNR/SSIM floor, remembered by content: a table of many rows scored in one process
    (the experiment runner) shares one floor, and SSIM over N x 100 pairs is the slow part of an evaluation."""
    key = hashlib.sha256(stand_in.cpu().numpy().tobytes() + references.cpu().numpy().tobytes()).hexdigest()
    if key not in _REAL_PSNR_SSIM:
        _REAL_PSNR_SSIM[key] = psnr_ssim_against_references(stand_in, references, batch_size, device)
    return _REAL_PSNR_SSIM[key]


def reference_order(num_reference_images: int, seed: int) -> torch.Tensor:
    """The order in which `evaluate_images` takes the reference images for `seed`: of N generated images, the first N
    are what they are compared with, the next N the real stand-in that gives the floor."""
    return torch.randperm(num_reference_images, generator=torch.Generator().manual_seed(seed))


def evaluate_images(
    images: torch.Tensor,
    reference: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    *,
    images_range: str = "[-1,1]",
    reference_range: str = "[-1,1]",
    originals: torch.Tensor | None = None,
    originals_range: str = "[-1,1]",
    inception_weights: str | Path | None = None,
    classifier: DigitClassifier | None = None,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    dinov2: str | torch.nn.Module | None = None,
    dinov2_image_size: int = 224,
    psnr_ssim: bool = True,
) -> dict:
    """Every applicable metric of `images` (N, C, H, W) against `reference` (default: shipped MNIST test split).

    Args:
        images, reference, originals: in the pixel ranges `images_range`, `reference_range`, `originals_range`
            ("[-1,1]", "[0,1]" or "uint8"); checked, and refused with a ValueError when the values contradict them.
        originals: for conditional generation (e.g. cold-diffusion reconstructions), the image each
            generated image should reproduce; adds the paired `psnr_paired` and `ssim_paired`.
        inception_weights: an Inception-v3 weights file for FID/IS (else torch hub's cache is looked in); IS is the
            mean over 10 splits, `inception_score_std` its standard deviation.
        classifier: the digit classifier (default: the shipped one).
        seed: picks the two disjoint real subsets.
        labels: for class-conditional generation, the intended class of each image: adds the classifier's
            accuracy on them, overall (`class_accuracy`) and per class (`class_accuracy_per_class`).
        dinov2: a DINOv2 model, or its local folder / Hub id (read from the cache only), for FD-DINOv2
            (`fd_dinov2`); None: not computed. Weights that are absent skip it with a note.
        psnr_ssim: False skips PSNR/SSIM against references, the slow part (time-to-quality curves).

    Returns:
        metric name -> float, plus `num_samples` (N), `num_reference` (size of each real subset),
        `pixel_range_checks` and `notes` (skipped metrics and why).
    """
    images, images_check = to_signed_unit_range(images, images_range, "generated images")
    digits = tuple(images.shape[1:]) == (1, 28, 28)
    if digits:
        classifier = DigitClassifier.from_file() if classifier is None else classifier
    if digits and labels is not None:  # refused before any metric is computed
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels were given for {len(images)} images: pass one intended class per image.")
        num_classes = classifier.config["num_classes"]
        labels = torch.from_numpy(class_label_array(labels, "in the labels,", num_classes, fix=f"pass one intended class 0..{num_classes - 1} per image"))
    if reference is None:
        reference, _ = load_dataset_images(split="test")
        reference_range = "uint8"
    if len(reference) < 4:
        raise ValueError(f"The reference has {len(reference)} images: pass at least 4 (two disjoint real subsets of 2).")
    notes = []
    # Two disjoint real subsets of up to N images: `compared` is what generated images are measured
    # against, `stand_in` replaces the generated images to give the real-vs-real value.
    num_reference = min(len(images), len(reference) // 2)
    if num_reference < len(images):
        notes.append(
            f"The reference has {len(reference)} images, fewer than 2N: real subsets of {num_reference} are used."
        )
    order = reference_order(len(reference), seed)
    real, reference_check = to_signed_unit_range(
        reference[order[: 2 * num_reference]], reference_range, "reference images"
    )
    if images.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"Generated images are {tuple(images.shape[1:])} but reference images {tuple(real.shape[1:])}: "
            "evaluate against a reference dataset of the same channels and resolution."
        )
    compared, stand_in = real[:num_reference], real[num_reference:]
    result = {"num_samples": len(images), "num_reference": num_reference}
    checks = {"images": images_check, "reference": reference_check}
    candidates = {"generated": images, "real": stand_in}

    if digits:
        for name, metrics in digit_metrics(classifier, compared, candidates, batch_size, device).items():
            suffix = "" if name == "generated" else "_real"
            result[f"digit_fd{suffix}"] = metrics["frechet_distance"]
            result[f"digit_is{suffix}"] = metrics["inception_score"]
            result[f"digit_confidence{suffix}"] = metrics["mean_confidence"]
            if name == "generated":
                result.update({f"digit_class_{k}_fraction": f for k, f in enumerate(metrics["class_histogram"])})
        if labels is not None:
            result["class_accuracy"], result["class_accuracy_per_class"] = class_accuracy(classifier, images, labels, batch_size, device)
    else:
        notes.append("Digit-classifier metrics skipped: they apply to 1x28x28 digit images only.")
        if labels is not None:
            notes.append("Class accuracy skipped: the shipped classifier reads 1x28x28 digits only.")

    if dinov2 is not None:
        model, unavailable = (dinov2, None) if isinstance(dinov2, torch.nn.Module) else load_dinov2(dinov2)
        if model is None:
            notes.append(unavailable)
        else:
            distances = frechet_distances(Dinov2Features(model, dinov2_image_size), compared, candidates, max(1, batch_size // 4), device)
            result["fd_dinov2"], result["fd_dinov2_real"] = distances["generated"], distances["real"]

    if psnr_ssim:
        psnr_references = compared[:NUM_PSNR_REFERENCES]
        result["psnr"], result["ssim"] = psnr_ssim_against_references(images, psnr_references, batch_size, device)
        result["psnr_real"], result["ssim_real"] = real_psnr_ssim(stand_in, psnr_references, batch_size, device)

    if originals is not None:
        originals, checks["originals"] = to_signed_unit_range(originals, originals_range, "original images")
        if originals.shape != images.shape:
            raise ValueError(
                f"originals have shape {tuple(originals.shape)} but images {tuple(images.shape)}: "
                "pass one original per generated image, in the same order."
            )
        psnr, ssim = paired_psnr_ssim(images, originals)
        result["psnr_paired"], result["ssim_paired"] = psnr.mean().item(), ssim.mean().item()

    unavailable = inception_unavailable_reason(inception_weights)
    if unavailable is None and len(images) < IS_SPLITS:
        unavailable = f"FID and Inception Score skipped: the Inception Score over {IS_SPLITS} splits needs at least {IS_SPLITS} images."
    if unavailable is None:
        inception = inception_metrics(compared, candidates, inception_weights, max(1, batch_size // 4), device)
        for name, metrics in inception.items():
            suffix = "" if name == "generated" else "_real"
            for key in ("fid", "inception_score", "inception_score_std"):
                result[f"{key}{suffix}"] = metrics[key]
    else:
        notes.append(unavailable)

    result["pixel_range_checks"] = {name: {**check, "passed": True} for name, check in checks.items()}
    result["notes"] = notes
    return result


def summary_line(result: dict) -> str:
    """The headline numbers on one line, each distance followed by its real-vs-real value."""
    parts = [f"N={result['num_samples']}"]
    for key, label, unit in (
        ("digit_fd", "digit FD", ""),
        ("digit_is", "digit IS", ""),
        ("digit_confidence", "confidence", ""),
        ("fd_dinov2", "FD-DINOv2", ""),
        ("fid", "FID", ""),
        ("inception_score", "IS", ""),
        ("psnr", "PSNR", " dB"),
        ("ssim", "SSIM", ""),
    ):
        if key == "inception_score" and key in result:  # Inception-v3 IS: mean ± std over 10 splits
            parts.append(f"IS {result[key]:.4g} ± {result[key + '_std']:.2g} (real {result[key + '_real']:.4g} ± {result[key + '_std_real']:.2g})")
        elif key in result:
            parts.append(f"{label} {result[key]:.4g}{unit} (real {result[key + '_real']:.4g})")
    if "class_accuracy" in result:
        parts.append(f"class accuracy {result['class_accuracy']:.1%}")
    if "psnr_paired" in result:
        parts.append(f"paired PSNR {result['psnr_paired']:.4g} dB, SSIM {result['ssim_paired']:.4g}")
    if "fid" not in result:
        parts.append("Inception FID/IS skipped (see notes)")
    return " | ".join(parts)


def write_result(result: dict, path: str | Path) -> None:
    """JSON with every metric; infinite PSNR (identical images) is written as the string "inf"."""
    readable = {key: "inf" if isinstance(value, float) and math.isinf(value) else value for key, value in result.items()}
    Path(path).write_text(json.dumps(readable, indent=2) + "\n")
