"""Image data: load a dataset once, decode it into a uint8 tensor cache, serve shuffled shards.

Decoding PIL images per item is what makes diffusers' example trainer slow on small models, so every
image is decoded exactly once into a `(N, C, H, W)` uint8 array stored as a `.npy` file and read
memory-mapped: data larger than RAM works, and a second run starts instantly. Batches are gathered
from that array; augmentation (horizontal flips) happens on tensors.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# The MNIST copy shipped with the repository (same schema as the Hub's `ylecun/mnist`).
SHIPPED_MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist"
VALIDATION_SPLIT_NAMES = ("test", "validation", "valid", "val")


class DataError(ValueError):
    """Bad or missing training data; the message names the problem and the fix."""


def _load_dataset_dict(dataset_name: str | None, train_data_dir: str | None):
    import datasets

    if dataset_name and train_data_dir:
        raise DataError("--dataset_name and --train_data_dir were both given: pass only one of them.")
    if train_data_dir:
        if not Path(train_data_dir).is_dir():
            raise DataError(f"--train_data_dir {train_data_dir} is not a folder: pass a folder of images.")
        return _load_local_folder(f"--train_data_dir {train_data_dir}", "imagefolder", data_dir=train_data_dir)
    source = dataset_name or str(SHIPPED_MNIST)
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
        return _load_local_folder(f"dataset folder {path}", str(path))
    if dataset_name is None:
        raise DataError(f"the shipped MNIST copy is missing at {path}: restore data/mnist or pass --dataset_name.")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise DataError(f"dataset folder {source} does not exist: check the path passed to --dataset_name.")
    try:
        return datasets.load_dataset(source)
    except Exception as error:  # offline, unknown id, gated repo...
        raise DataError(
            f"could not load dataset {source!r} ({type(error).__name__}): pass an existing local folder "
            "or a Hub dataset id reachable from this machine."
        ) from None


def _load_local_folder(what: str, *args, **kwargs):
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except (FileNotFoundError, ValueError) as error:  # no data files, or none for the train split
        raise DataError(f"{what} holds no data ({error}): pass a folder of images, parquet or save_to_disk files.") from None


def _image_mode(image: Image.Image) -> str:
    """Grayscale stays one channel, everything else becomes RGB."""
    return "L" if image.mode in ("L", "1", "I", "I;16", "F", "LA") else "RGB"


def _open(item) -> Image.Image:
    """A PIL image from a datasets Image cell read with decode=False ({"bytes", "path"})."""
    if isinstance(item, Image.Image):
        return item
    if not isinstance(item, dict) or not (item.get("bytes") or item.get("path")):
        raise DataError(f"column holds {type(item).__name__}, not images: pass the image column with --image_column.")
    image = Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])
    image.load()
    return image


def _open_or_explain(item, index: int) -> Image.Image:
    try:
        return _open(item)
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        name = item.get("path") if isinstance(item, dict) else None
        raise DataError(f"image {index} ({name or 'in memory'}) cannot be decoded ({error}): remove or fix that file and rerun.") from None


def _decode(image: Image.Image, mode: str, resolution: int, center_crop: bool) -> np.ndarray:
    image = image.convert(mode)
    if center_crop:
        scale = resolution / min(image.size)
        image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))), Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    elif image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_split(split, image_column: str, resolution: int, center_crop: bool, path: Path, desc: str) -> None:
    """Decode every image of `split` into a `.npy` file at `path`, written atomically."""
    import datasets
    from tqdm.auto import tqdm

    if image_column not in split.column_names:
        raise DataError(
            f"column {image_column!r} not found (columns: {', '.join(split.column_names)}): "
            "pass the right one with --image_column."
        )
    if len(split) == 0:
        raise DataError("the dataset has no images: check --dataset_name / --train_data_dir.")
    column = split.select_columns([image_column])
    if isinstance(column.features[image_column], datasets.Image):
        # Decode ourselves so that a broken file is reported with its index instead of a datasets traceback.
        column = column.cast_column(image_column, datasets.Image(decode=False))
    mode = _image_mode(_open_or_explain(column[0][image_column], 0))
    channels = 1 if mode == "L" else 3
    tmp_path = path.with_suffix(f".{os.getpid()}.tmp.npy")
    array = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(len(split), channels, resolution, resolution))
    try:
        for index, row in enumerate(tqdm(column, desc=desc, leave=False)):
            array[index] = _decode(_open_or_explain(row[image_column], index), mode, resolution, center_crop)
        array.flush()
        del array
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 images at `indices` as a float tensor in [-1, 1]."""
        # Sorted reads are sequential on disk; the order inside a batch does not matter for training.
        gathered = self.images[np.sort(indices)]
        return torch.from_numpy(gathered).float().div_(127.5).sub_(1.0)

    def batch_labels(self, indices: np.ndarray) -> torch.Tensor:
        """int64 class labels at `indices`, in the order `batch` returns the images (sorted indices)."""
        return torch.from_numpy(np.ascontiguousarray(self.labels[np.sort(indices)])).long()


def _cache_dir() -> Path:
    return Path(os.environ.get("DIFFUSION_LAB_CACHE", Path.home() / ".cache" / "diffusion_lab"))


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
    dataset = _load_dataset_dict(dataset_name, train_data_dir)
    if "train" not in dataset:
        raise DataError(f"the dataset has no 'train' split (splits: {', '.join(dataset)}): use a dataset with one.")
    train = dataset["train"]
    validation_name = next((name for name in VALIDATION_SPLIT_NAMES if name in dataset), None)
    if validation_name is not None:
        validation = dataset[validation_name]
    else:
        held_out = train.train_test_split(test_size=validation_fraction, seed=seed)
        train, validation = held_out["train"], held_out["test"]
    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
        validation = validation.select(range(min(max(1, max_train_samples // 10), len(validation))))

    # Labels are read (and checked) on every process, so that a bad label stops all of them, not only the main one.
    classes = None if label_column is None else class_names_of(train, label_column)
    caches = []
    for name, split in (("train", train), ("validation", validation)):
        labels = None if classes is None else read_labels(split, label_column, len(classes), name)
        key = json.dumps([split._fingerprint, image_column, resolution, center_crop])
        path = _cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{name}.npy"
        if is_main_process and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _decode_split(split, image_column, resolution, center_crop, path, desc=f"decoding {name} images")
        wait_for_everyone()
        cache = ImageCache(np.load(path, mmap_mode="r"))
        if labels is not None:
            cache.labels, cache.num_classes, cache.class_names = labels, len(classes), classes
        caches.append(cache)
    return caches[0], caches[1]


def class_names_of(split, label_column: str) -> list[str]:
    """Class names from the column's `ClassLabel` feature, else its distinct values (integers 0..K-1 expected)."""
    import datasets

    if label_column not in split.column_names:
        raise DataError(
            f"--class_conditional: the dataset has no column {label_column!r} (columns: {', '.join(split.column_names)}): "
            "pass the label column with --label_column."
        )
    feature = split.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    _check_integer_feature(feature, label_column)
    distinct = np.unique(np.asarray(split.with_format("numpy")[label_column]))
    return [str(value) for value in range(len(distinct))]


def _check_integer_feature(feature, label_column: str) -> None:
    import datasets

    if not (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        described = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
        raise DataError(
            f"--class_conditional: column {label_column!r} holds {described} values, not integer class labels: "
            "pass an integer or ClassLabel column with --label_column."
        )


def read_labels(split, label_column: str, num_classes: int, split_name: str = "train") -> np.ndarray:
    """The int64 labels of `split`, refused unless each is in 0..num_classes-1."""
    import datasets

    if label_column not in split.column_names:
        raise DataError(f"--class_conditional: the {split_name} split has no column {label_column!r}: pass the label column with --label_column.")
    feature = split.features[label_column]
    if not isinstance(feature, datasets.ClassLabel):
        _check_integer_feature(feature, label_column)
    labels = np.asarray(split.with_format("numpy")[label_column]).astype(np.int64)
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(outside):
        index = int(outside[0])
        raise DataError(
            f"--class_conditional: {split_name} image {index} has label {int(labels[index])}, outside 0..{num_classes - 1} "
            f"({num_classes} classes): fix the labels in column {label_column!r}."
        )
    return labels


class ShardedBatches:
    """Per-epoch shuffled batches of one process's shard, addressable by step (exact resume)."""

    def __init__(self, num_images: int, batch_size: int, num_processes: int, process_index: int, seed: int):
        self.num_images = num_images
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.batches_per_epoch = num_images // (batch_size * num_processes)
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_images} images are fewer than one batch of {batch_size} x {num_processes} processes: "
                "lower --train_batch_size or add data."
            )

    def indices(self, epoch: int, batch_in_epoch: int) -> np.ndarray:
        """Image indices of one batch: every process uses the same permutation, each its own slice."""
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
        start = (batch_in_epoch * self.num_processes + self.process_index) * self.batch_size
        return permutation[start : start + self.batch_size]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def image_grid(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """A PIL grid of images given in [-1, 1], shape (N, C, H, W)."""
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(channels, rows * (height + 2) + 2, columns * (width + 2) + 2, dtype=torch.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = 2 + row * (height + 2), 2 + column * (width + 2)
        grid[:, top : top + height, left : left + width] = pixels[index]
    array = grid.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
