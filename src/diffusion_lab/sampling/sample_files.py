"""The files `diffusion-lab sample` writes, written as the images are made.

Each batch goes at once into `<output_dir>/partial/`: its PNGs, and its rows of a preallocated `samples.npy`. A run
that is interrupted or fails keeps there what it made. At the end `samples.npz` and `grid.png` are written from the
memory-mapped array (never all images in memory) and the outputs are moved into place, replacing earlier samples
as a whole.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..run_files import RUN_MARKERS
from ..stopping import TrainingStopped, interruption
from .figures import class_grid, uint8_grid
from .generation import generate_batches

SAMPLE_OUTPUTS = ("samples.npz", "grid.png", "images", "four_columns.png")
PARTIAL = "partial"


def check_samples_folder(output_dir: Path, overwrite: bool) -> None:
    """Refuse, writing nothing, a folder that holds anything already (earlier samples, a run: samples written there
    would be uploaded with it) unless `overwrite`, and one that cannot be created or written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a folder path.")
    held = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    first = [name for name in ("samples.npz", *RUN_MARKERS) if name in held] + held  # the telling one first
    if held and not overwrite:
        raise FileExistsError(f"--output_dir {output_dir} already holds {first[0]}: pass another --output_dir or --overwrite_output_dir.")
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):  # fail now rather than after sampling
        reason = "Not a directory" if not existing.is_dir() else "Permission denied"
        raise PermissionError(f"cannot write to --output_dir {output_dir} ({reason}): choose a writable folder.")


def clear_earlier_samples(output_dir: Path) -> None:
    """--overwrite_output_dir: earlier samples go as a whole, so none of them mixes with the new ones."""
    for name in SAMPLE_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class SampleWriter:
    """Writes `num_images` images batch by batch into `<output_dir>/partial/`, then `finish` moves them into place."""

    def __init__(self, output_dir: Path, num_images: int):
        self.output_dir = output_dir
        self.folder = output_dir / PARTIAL
        self.num_images = num_images
        self.count = 0
        self.images = None  # samples.npy, allocated when the first batch gives the image size
        if self.folder.exists():  # an earlier cut-off run's (only reached with --overwrite_output_dir)
            shutil.rmtree(self.folder)

    def add(self, batch: np.ndarray) -> None:
        if self.images is None:  # created with the first images: a run that makes none writes nothing
            (self.folder / "images").mkdir(parents=True)
            self.images = np.lib.format.open_memmap(self.folder / "samples.npy", mode="w+", dtype=np.uint8,
                                                    shape=(self.num_images, *batch.shape[1:]))
        for image in batch:
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(self.folder / "images" / f"{self.count:05d}.png")
            self.images[self.count] = image
            self.count += 1
        self.images.flush()

    def finish(self, grid: Image.Image, labels: list[int] | None = None) -> None:
        """Write samples.npz (images, and `labels` if given) and `grid`, then move them and images/ into place."""
        arrays = {"images": self.images}
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
        np.savez_compressed(self.folder / "samples.npz", **arrays)
        grid.save(self.folder / "grid.png")
        self.images = None
        (self.folder / "samples.npy").unlink()
        clear_earlier_samples(self.output_dir)
        for name in ("images", "grid.png", "samples.npz"):  # samples.npz, the mark of a complete run, last
            os.replace(self.folder / name, self.output_dir / name)
        self.folder.rmdir()


def write_samples(pipeline, output_dir: Path, num_images: int, batch_size: int, seed: int, num_inference_steps: int | None,
                  class_labels: list[int] | None = None, per_class: int | None = None, **kwargs) -> None:
    """Generate `num_images` images into `output_dir` (images/*.png, samples.npz, grid.png), each batch written as it
    is made. Class-conditional pipelines: `class_labels` for each image, drawn
    `per_class` at a time, and a grid row per class. Interrupted (Ctrl-C; SIGTERM under `sigterm_as_interrupt`), the
    images made so far stay in partial/."""
    writer = SampleWriter(output_dir, num_images)
    try:
        for batch in generate_batches(pipeline, num_images, batch_size, seed, num_inference_steps, class_labels=class_labels, **kwargs):
            writer.add(batch)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM under sigterm_as_interrupt
        what, exit_code = interruption(stop)
        if writer.count == 0:
            raise TrainingStopped(f"{what} before the first batch was made: nothing was written; rerun the command.", exit_code) from None
        raise TrainingStopped(f"{what}: the {writer.count} of {num_images} images made so far are in {writer.folder}/ "
                              "(images/*.png, samples.npy); rerun with --overwrite_output_dir for all of them.", exit_code) from None
    grid = uint8_grid(writer.images[:64]) if class_labels is None else class_grid(writer.images, per_class)
    writer.finish(grid, class_labels)
