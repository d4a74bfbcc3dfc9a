"""The files `sample` writes, written as the images are made.

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

SAMPLE_OUTPUTS = ("samples.npz", "grid.png", "images", "four_columns.png")
PARTIAL = "partial"


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
        (self.folder / "images").mkdir(parents=True)

    def add(self, batch: np.ndarray) -> None:
        if self.images is None:
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
