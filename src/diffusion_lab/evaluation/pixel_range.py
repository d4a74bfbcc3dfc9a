"""Check that images are in the pixel range they are declared to be in, and bring them to [-1, 1].

Scoring images in the wrong range (e.g. [0, 1] images compared with [-1, 1] references) silently
shifts every metric; here a mismatch is refused instead.
"""

import torch

PIXEL_RANGES = ("[-1,1]", "[0,1]", "uint8")
# Float images may overshoot their range by rounding error, not more.
TOLERANCE = 1e-3


def to_signed_unit_range(images: torch.Tensor, pixel_range: str, name: str = "images") -> tuple[torch.Tensor, dict]:
    """Validate (N, C, H, W) images declared in `pixel_range` and return them as float32 in [-1, 1].

    Returns the converted images and a record of the check (declared range, dtype, observed min and max).
    Raises ValueError when the values contradict the declaration, naming the range they look like.
    """
    if pixel_range not in PIXEL_RANGES:
        raise ValueError(f"Unknown pixel range {pixel_range!r} for {name}: use one of {PIXEL_RANGES}.")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) < 2:
        raise ValueError(
            f"{name} have shape {tuple(images.shape)}: pass at least 2 images as (N, C, H, W) with C = 1 or 3."
        )
    is_uint8 = images.dtype == torch.uint8
    if (pixel_range == "uint8") != is_uint8:
        hint = "declare them 'uint8'" if is_uint8 else "declare their float range, '[-1,1]' or '[0,1]'"
        raise ValueError(f"{name} are {images.dtype} but declared {pixel_range}: {hint}.")
    if not is_uint8 and not images.is_floating_point():
        raise ValueError(f"{name} are {images.dtype}: pass uint8 or floating point images.")
    if not is_uint8 and not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values: check the model or sampler that produced them.")
    low, high = images.min().item(), images.max().item()
    check = {"declared": pixel_range, "dtype": str(images.dtype).removeprefix("torch."), "min": low, "max": high}
    problem = _range_problem(pixel_range, low, high)
    if problem:
        raise ValueError(f"{name} are declared {pixel_range} but span [{low:.4g}, {high:.4g}]: {problem}.")
    if pixel_range == "uint8":
        converted = images.float() / 127.5 - 1
    elif pixel_range == "[0,1]":
        converted = images.float().clamp(0, 1) * 2 - 1
    else:
        converted = images.float().clamp(-1, 1)
    return converted, check


def _range_problem(pixel_range: str, low: float, high: float) -> str | None:
    """What is wrong with values spanning [low, high] under `pixel_range`, with the fix; None if nothing."""
    if pixel_range == "uint8":
        if high <= 1:
            return "they look like 0/1 masks or [0,1] floats cast to uint8; pass the floats and declare '[0,1]'"
        return None
    if high > 1 + TOLERANCE:
        return "they look like [0,255] values; divide by 255 and declare '[0,1]', or pass uint8 and declare 'uint8'"
    if pixel_range == "[0,1]" and low < -TOLERANCE:
        return "they look like [-1,1] images; declare '[-1,1]'"
    if pixel_range == "[-1,1]" and low < -1 - TOLERANCE:
        return "values below -1 are out of range; clamp the samples to [-1,1]"
    if pixel_range == "[-1,1]" and low >= 0:
        return "no pixel is negative, so they look like [0,1] images; declare '[0,1]' (or map them with x * 2 - 1)"
    return None
