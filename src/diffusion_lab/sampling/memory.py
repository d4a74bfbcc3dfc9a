"""Whether a sampling run fits, checked before it starts: the model's activations for one batch against the memory
of the device, and the images against the memory or disk that holds them."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch

# Written per image to disk: the preallocated samples.npy, samples.npz and the PNG (each at most about the raw bytes).
DISK_COPIES = 3


def available_memory(device: torch.device) -> int:
    """Free bytes on `device`: CUDA's free memory, or the host's MemAvailable (what can be allocated without swapping)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def image_shape(config) -> tuple[int, int, int]:
    """(C, H, W) of the images a model takes."""
    size = config.sample_size if isinstance(config.sample_size, (tuple, list)) else (config.sample_size,) * 2
    return (config.in_channels, *size)


@torch.no_grad()
def activation_bytes_per_image(model) -> int:
    """The bytes of every layer output of one forward pass of one image: an upper bound of what sampling holds per
    image (without gradients most outputs are freed as the pass goes on)."""
    parameter = next(model.parameters())
    sample = torch.zeros(1, *image_shape(model.config), dtype=parameter.dtype, device=parameter.device)
    labels = {"class_labels": torch.zeros(1, dtype=torch.long, device=parameter.device)} if getattr(model.config, "num_class_embeds", None) else {}
    total = sample.nbytes

    def count(module, inputs, output):
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor):
                total += tensor.nbytes

    handles = [module.register_forward_hook(count) for module in model.modules() if not list(module.children())]
    try:
        model(sample, torch.zeros(1, dtype=torch.long, device=parameter.device), **labels)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _gb(count: int) -> str:
    return f"{count / 1e9:.2f} GB"


def check_sampling_fits(model, num_images: int, batch_size: int, device: str, value_bytes: int,
                        output_dir: Path | None = None, flags: tuple[str, str] = ("--num_images", "--batch_size")) -> None:
    """Refuse, in one line naming `flags`, a run whose batches cannot fit in the memory of `device`, or whose
    `num_images` images (`value_bytes` per pixel value: 1 for uint8) cannot fit where they go: written under
    `output_dir` as they are made (free disk), or, without `output_dir`, held in the memory of `device`."""
    device = torch.device(device)
    image_bytes = value_bytes * math.prod(image_shape(model.config))
    images_flag, batch_flag = flags
    per_batch = min(batch_size, num_images) * activation_bytes_per_image(model)
    held = 0 if output_dir is not None else num_images * image_bytes
    free = available_memory(device)
    if per_batch + held > free:
        also = held and images_flag != batch_flag  # the images held count too
        raise ValueError(
            f"{batch_flag} {batch_size}{f' and {images_flag} {num_images} need' if also else ' needs'} up to "
            f"{_gb(per_batch + held)} of memory on {device}, which has {_gb(free)} free: lower {batch_flag}"
            f"{f' or {images_flag}' if also else ''}."
        )
    if output_dir is not None:
        folder = Path(output_dir).absolute()
        while not folder.is_dir():
            folder = folder.parent
        needed, free = DISK_COPIES * num_images * image_bytes, shutil.disk_usage(folder).free
        if needed > free:
            raise ValueError(
                f"{images_flag} {num_images} would write up to {_gb(needed)} of samples but {folder} has {_gb(free)} "
                f"free: lower {images_flag} or free disk space."
            )
