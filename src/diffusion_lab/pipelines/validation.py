"""What a saved pipeline holds is checked before it is used: a pipeline folder is user input.

Each component's config is checked against its class before anything is built from it (types, and sizes a
model, a schedule and memory can take), each weights file before it is read into a model (finite, in range), and
a scheduler's betas once it is built. A problem is one line naming the file and the field. The images a pipeline
makes are checked too (`check_images`), so that a broken one never writes black or non-finite images.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

# Any count or width in a config; a width of 10^9 is refused before anything is allocated.
MAX_SIZE = 2**16
# An image side: activations and degradation operators grow with its square.
MAX_SIDE = 2**12
# Fields that are sizes even where the class's default is None (diffusers' UNet2DModel).
SIZES = ("sample_size", "in_channels", "out_channels", "num_train_timesteps", "num_levels", "kernel_size", "num_class_embeds")
# Numbers with no bound (a degradation's random order comes from any seed).
ANY_NUMBER = ("seed",)
# |w| beyond this is no trained weight: it overflows activations (bf16/fp16) or marks a corrupted file.
MAX_WEIGHT = 1e5
FIX = "re-save or re-download the pipeline"


def _refuse(path: Path, field: str, problem: str):
    raise ValueError(f"{path}: {field} {problem}: {FIX}.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_size(path: Path, field: str, value, largest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(path, field, f"is {value!r}, not a whole number")
    if not 1 <= value <= largest:
        _refuse(path, field, f"is {value}, outside 1..{largest}")


def _check_field(path: Path, field: str, value, default) -> None:
    """`value` of a config field against the class's default: same kind of value, sizes positive and bounded. None
    is left to the class (many settings are optional), except for a size the class has a default for."""
    if value is None and (default is None or field not in SIZES):
        return
    if field == "sample_size":
        for side in value if isinstance(value, (list, tuple)) else [value]:
            _check_size(path, field, side, MAX_SIDE)
    elif field in SIZES:
        _check_size(path, field, value, MAX_SIZE)
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            _refuse(path, field, f"is {value!r}, not true or false")
    elif isinstance(default, (int, float)):
        if not _is_number(value):
            _refuse(path, field, f"is {value!r}, not a finite number")
        if abs(value) > MAX_SIZE and field not in ANY_NUMBER:
            _refuse(path, field, f"is {value}, beyond {MAX_SIZE}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            _refuse(path, field, f"is {value!r}, not a string")
    elif isinstance(default, (list, tuple)) and default and all(isinstance(item, int) for item in default):
        if not isinstance(value, (list, tuple)) or not value:
            _refuse(path, field, f"is {value!r}, not a list of sizes")
        for item in value:
            _check_size(path, field, item, MAX_SIZE)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not POSIX
        return 2**40


def check_config(component_class: type, folder: Path) -> None:
    """The config of a component of `component_class` saved in `folder`, before the class is built from it. A config
    the loader cannot read at all is left to its own message."""
    from diffusers import ModelMixin

    from .export import diffusers_warnings_off

    path = folder / component_class.config_name
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(config, dict):
        return
    defaults = {name: parameter.default for name, parameter in inspect.signature(component_class.__init__).parameters.items()
                if parameter.default is not parameter.empty}
    for field, value in config.items():
        if field in defaults or field in SIZES:
            _check_field(path, field, value, defaults.get(field))
    if issubclass(component_class, ModelMixin):
        # Built on the meta device (no memory): its parameter count says whether the real one can be allocated.
        try:
            with torch.device("meta"), diffusers_warnings_off():
                parameters = sum(parameter.numel() for parameter in component_class.from_config(config).parameters())
        except Exception:  # a config the class refuses: the loader says why
            return
        if parameters * 4 > _physical_memory():
            sizes = {field: max(value if isinstance(value, list) else [value]) for field, value in config.items()
                     if isinstance(value, int) or (isinstance(value, list) and value and all(isinstance(item, int) for item in value))}
            widest = max(sizes, key=sizes.get)
            _refuse(path, widest, f"{config[widest]} gives a model of {parameters:,} parameters ({parameters * 4 / 1e9:,.0f} GB), "
                                  f"more than this machine's {_physical_memory() / 1e9:,.0f} GB of memory")


def check_weights(folder: Path) -> None:
    """Every tensor of the safetensors files in `folder` finite and within `MAX_WEIGHT`; a file safetensors cannot
    read is left to the loader's own message."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt") as weights:
                for name in weights.keys():
                    tensor = weights.get_tensor(name)
                    if not tensor.is_floating_point() or tensor.numel() == 0:
                        continue
                    if not torch.isfinite(tensor).all():
                        _refuse(path, name, "holds NaN or infinite values")
                    largest = tensor.abs().max().item()
                    if largest > MAX_WEIGHT:
                        _refuse(path, name, f"holds {largest:.3g}, far beyond any trained weight (|w| <= {MAX_WEIGHT:g})")
        except SafetensorError:
            return


def check_betas(scheduler, path: Path) -> None:
    """A built scheduler's betas (from `path`, its config): finite and in (0, 1); the last may be 1 with
    rescale_betas_zero_snr, which makes it so."""
    betas = getattr(scheduler, "betas", None)
    if not isinstance(betas, torch.Tensor):
        return
    config = scheduler.config
    fields = [name for name in ("beta_start", "beta_end") if not (_is_number(config.get(name, 0.5)) and 0 < config.get(name, 0.5) < 1)]
    field = "trained_betas" if config.get("trained_betas") is not None else (fields or ["beta_schedule"])[0]
    inner = betas[:-1] if config.get("rescale_betas_zero_snr") else betas
    if not (torch.isfinite(betas).all() and (inner > 0).all() and (inner < 1).all() and 0 < betas[-1] <= 1):
        bad = betas[~(torch.isfinite(betas) & (betas > 0) & (betas < 1))]
        _refuse(path, field, f"makes betas outside (0, 1) ({bad[0].item():g})")


def check_images(images: np.ndarray | torch.Tensor, batch: int) -> None:
    """Images a pipeline made (any layout, values in [0, 1]): refused, before anything is written of them, if any
    value is not finite or every image is one flat colour (a broken model or schedule: all black, all white)."""
    images = torch.as_tensor(images).float()
    if not torch.isfinite(images).all():
        raise ValueError(f"sampling made NaN or infinite values in batch {batch}: the pipeline's weights or schedule are "
                         f"broken, nothing was written of that batch: {FIX} (or retrain it).")
    flat = images.flatten(1)
    if len(flat) and flat[0].numel() > 1 and bool((flat.amax(1) == flat.amin(1)).all()):
        raise ValueError(f"sampling made only blank images (every pixel {flat[0, 0].item():g}) in batch {batch}: the pipeline's "
                         f"weights or schedule are broken, nothing was written of that batch: {FIX} (or retrain it).")
