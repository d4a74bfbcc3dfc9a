"""The decoded-image cache: each split decoded once into a memory-mapped `(N, C, H, W)` uint8 `.npy`, served as
float batches in [-1, 1]; optionally kept on the accelerator."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from .decoding import dataset_mode, decode_split, image_column_of
from .sources import (
    VALIDATION_SPLIT_NAMES,
    DataError,
    cache_dir,
    class_names_of,
    load_dataset_dict,
    read_labels,
)


@dataclass
class ImageCache:
    """Decoded images of one split: uint8 array `(N, C, H, W)` (memory-mapped), and for class-conditional runs the
    int64 class label of each image (`labels`, shape `(N,)`), the number of classes and their names."""

    images: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def batch(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images at `indices` as a float tensor in [-1, 1], on the device the images are on. Indices given as
        a tensor (a CUDA-graphed step's device buffer) must be sorted already."""
        return _gather(self.images, _sorted(indices)).float().div_(127.5).sub_(1.0)

    def batch_labels(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """int64 class labels at `indices`, in the order `batch` returns the images (sorted indices)."""
        return _gather(self.labels, _sorted(indices)).long()

    @property
    def nbytes(self) -> int:
        return self.images.nbytes if isinstance(self.images, np.ndarray) else self.images.numel() * self.images.element_size()

    def to(self, device: torch.device | str) -> "ImageCache":
        """A copy whose images (and labels) live on `device`: batches are then gathered and converted there, with
        no host work or transfer per step but that of the indices."""
        labels = None if self.labels is None else torch.from_numpy(np.array(self.labels)).to(device)
        return replace(self, images=torch.from_numpy(np.array(self.images)).to(device), labels=labels)


def _sorted(indices: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    # Sorted reads are sequential on disk; the order inside a batch does not matter for training.
    return indices if isinstance(indices, torch.Tensor) else np.sort(indices)


def _gather(array: np.ndarray | torch.Tensor, sorted_indices: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        index = sorted_indices if isinstance(sorted_indices, torch.Tensor) else torch.from_numpy(sorted_indices)
        return array[index.to(array.device)]
    if isinstance(sorted_indices, torch.Tensor):
        sorted_indices = sorted_indices.cpu().numpy()
    return torch.from_numpy(np.ascontiguousarray(array[sorted_indices]))


# The share of free accelerator memory the training images may take when --data_on_device is left to decide.
DEVICE_DATA_SHARE = 0.25


def keep_on_device(requested: bool | None, device: torch.device, nbytes: int) -> bool:
    """--data_on_device: as asked, else (auto) on CUDA when the images take at most a quarter of the free memory.

    A CPU gains nothing from it: the memory-mapped cache is already in RAM once read.
    """
    if requested is not None:
        return requested
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_DATA_SHARE * free


def load_image_caches(
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str = "image",
    resolution: int = 28,
    center_crop: bool = False,
    validation_fraction: float = 0.05,
    max_train_samples: int | None = None,
    seed: int = 0,
    is_main_process: bool = True,
    wait_for_everyone=lambda: None,
    label_column: str | None = None,
) -> tuple[ImageCache, ImageCache]:
    """Train and validation caches. Validation is the dataset's test/validation split, else a held-out fraction.

    The main process decodes; the others wait and then map the same files. With `label_column` (class-conditional
    training) each cache also holds the labels of its images, checked by `read_labels`.
    """
    if resolution < 8:
        raise DataError(f"--resolution {resolution} is too small: use 8 or more (28 for MNIST, 32 for CIFAR-10).")
    if not 0 < validation_fraction < 1:
        raise DataError(f"--validation_fraction {validation_fraction} must be in (0, 1), e.g. 0.05.")
    dataset, content_digest = load_dataset_dict(dataset_name, train_data_dir)
    if "train" not in dataset:
        raise DataError(f"the dataset has no 'train' split (splits: {', '.join(dataset)}): use a dataset with one.")
    train = dataset["train"]
    validation_name = next((name for name in VALIDATION_SPLIT_NAMES if name in dataset), None)
    if validation_name is not None:
        validation = dataset[validation_name]
    else:
        try:
            held_out = train.train_test_split(test_size=validation_fraction, seed=seed)
        except ValueError:
            raise DataError(
                f"the dataset has {len(train)} image(s) and no test/validation split: too few to hold out "
                f"--validation_fraction {validation_fraction} and train on the rest: add images (or a test split)."
            ) from None
        train, validation = held_out["train"], held_out["test"]
    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
        validation = validation.select(range(min(max(1, max_train_samples // 10), len(validation))))

    # Labels are read (and checked) on every process, so that a bad label stops all of them, not only the main one.
    classes = None if label_column is None else class_names_of(train, label_column)
    splits, paths = {"train": train, "validation": validation}, {}
    for name, split in splits.items():
        # The content digest: a source file changed in place (same name, same mtime) is decoded again.
        key = json.dumps([split._fingerprint, content_digest, image_column, resolution, center_crop])
        paths[name] = cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{name}.npy"
    labels = {name: None if classes is None else read_labels(split, label_column, len(classes), name) for name, split in splits.items()}
    if is_main_process and not all(path.exists() for path in paths.values()):
        columns = {name: image_column_of(split, image_column) for name, split in splits.items()}
        mode = dataset_mode(columns.values(), image_column)
        for name, path in paths.items():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                decode_split(columns[name], image_column, mode, resolution, center_crop, path, desc=f"decoding {name} images")
    wait_for_everyone()
    caches = []
    for name in splits:
        cache = ImageCache(np.load(paths[name], mmap_mode="r"))
        if labels[name] is not None:
            cache.labels, cache.num_classes, cache.class_names = labels[name], len(classes), classes
        caches.append(cache)
    return caches[0], caches[1]
