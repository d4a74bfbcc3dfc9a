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
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .training.stopping import stop_cleanly_on_sigterm

# The MNIST copy shipped with the repository (same schema as the Hub's `ylecun/mnist`).
SHIPPED_MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist"
VALIDATION_SPLIT_NAMES = ("test", "validation", "valid", "val")


class DataError(ValueError):
    """Bad or missing training data; the message names the problem and the fix."""


def _content_digest(folder: Path) -> str:
    """SHA-1 of every file's relative path and bytes: changes when any content changes, whatever the mtimes say."""
    digest = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _load_dataset_dict(dataset_name: str | None, train_data_dir: str | None):
    """The dataset, and for a local folder the digest of its content (None for a Hub dataset, which a revision
    pins)."""
    import datasets

    if dataset_name and train_data_dir:
        raise DataError("--dataset_name and --train_data_dir were both given: pass only one of them.")
    if train_data_dir:
        if not Path(train_data_dir).is_dir():
            raise DataError(f"--train_data_dir {train_data_dir} is not a folder: pass a folder of images.")
        return _load_local_folder(f"--train_data_dir {train_data_dir}", Path(train_data_dir), "imagefolder", data_dir=train_data_dir)
    source = dataset_name or str(SHIPPED_MNIST)
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))  # read from the folder itself: never stale
            loaded = loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
            return loaded, _content_digest(path)
        return _load_local_folder(f"dataset folder {path}", path, str(path))
    if dataset_name is None:
        raise DataError(f"the shipped MNIST copy is missing at {path}: restore data/mnist or pass --dataset_name.")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise DataError(f"dataset folder {source} does not exist: check the path passed to --dataset_name.")
    try:
        return datasets.load_dataset(source), None
    except Exception as error:  # offline, unknown id, gated repo...
        raise DataError(
            f"could not load dataset {source!r} ({type(error).__name__}): pass an existing local folder "
            "or a Hub dataset id reachable from this machine."
        ) from None


def _load_local_folder(what: str, folder: Path, *args, **kwargs):
    """datasets' loader over a local folder, rebuilt when the folder's content changed since it was last loaded:
    datasets keys its own cache on paths and modification times only."""
    import datasets

    digest = _content_digest(folder)
    record = _cache_dir() / "sources" / f"{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]}.txt"
    if record.exists() and record.read_text() != digest:
        kwargs["download_mode"] = "force_redownload"
    try:
        loaded = datasets.load_dataset(*args, **kwargs)
    except (FileNotFoundError, ValueError) as error:  # no data files, or none for the train split
        raise DataError(f"{what} holds no data ({error}): pass a folder of images, parquet or save_to_disk files.") from None
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(digest)
    except OSError:  # a read-only cache: the decoded cache below still goes by content
        pass
    return loaded, digest


GRAYSCALE_MODES = ("1", "L", "LA", "La")
# 32-bit integer and float images have no defined intensity range (0..1? 0..255? 0..65535?): refused, not guessed.
UNDEFINED_RANGE_MODES = ("I", "F")


def _is_16_bit(image: Image.Image) -> bool:
    return image.mode.startswith("I;16")


def _image_mode(image: Image.Image) -> str:
    """Grayscale (1, 8 or 16 bits) stays one channel, everything else becomes RGB."""
    return "L" if image.mode in GRAYSCALE_MODES or _is_16_bit(image) else "RGB"


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (PIL's convert("L") would clip every value above 255 to white)."""
    if not _is_16_bit(image):
        return image
    return Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().astype(np.uint8), mode="L")


def _open(item) -> Image.Image:
    """A PIL image from a datasets Image cell read with decode=False ({"bytes", "path"})."""
    if isinstance(item, Image.Image):
        return item
    if not isinstance(item, dict) or not (item.get("bytes") or item.get("path")):
        raise DataError(f"column holds {type(item).__name__}, not images: pass the image column with --image_column.")
    with warnings.catch_warnings():
        # Above Image.MAX_IMAGE_PIXELS PIL only warns (an error above twice that): refuse before decoding it at all.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])
        image.load()
    return image


def _open_or_explain(item, index: int) -> Image.Image:
    if item is None:
        raise DataError(f"image {index} is empty (null in the dataset): remove or fill that row and rerun.")
    name = (item.get("path") if isinstance(item, dict) else None) or "in memory"
    try:
        image = _open(item)
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(
            f"image {index} ({name}) has more than {Image.MAX_IMAGE_PIXELS:,} pixels: decoding it could exhaust memory "
            "(a decompression bomb?); shrink or remove it and rerun."
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(f"image {index} ({name}) cannot be decoded ({error}): remove or fix that file and rerun.") from None
    if image.mode in UNDEFINED_RANGE_MODES:
        raise DataError(
            f"image {index} ({name}) is a 32-bit {'float' if image.mode == 'F' else 'integer'} image (mode {image.mode}) "
            "with no defined intensity range: convert it to 8- or 16-bit and rerun."
        )
    return image


def read_image(path: str | Path, index: int, mode: str | None = None) -> np.ndarray:
    """One image file as uint8 intensities, (H, W) in grayscale or (H, W, 3), with the checks and conversions of
    the training data (16-bit scaled, no 32-bit guesses, no decompression bombs); `mode` defaults to the image's own
    L or RGB."""
    image = _open_or_explain({"path": str(path), "bytes": None}, index)
    mode = mode or _image_mode(image)
    try:
        return np.asarray(_to_8_bit(image).convert(mode), dtype=np.uint8)
    except ValueError as error:
        raise DataError(f"image {index} ({path}) of mode {image.mode} cannot be converted to {mode} ({error}): convert it to RGB or grayscale.") from None


def _decode(image: Image.Image, mode: str, resolution: int, center_crop: bool) -> np.ndarray:
    try:
        image = _to_8_bit(image).convert(mode)
    except ValueError as error:  # a mode PIL cannot convert (e.g. LAB)
        raise DataError(f"an image of mode {image.mode} cannot be converted to {mode} ({error}): convert the images to RGB or grayscale.") from None
    if center_crop:
        scale = resolution / min(image.size)
        image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))), Image.BICUBIC)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    elif image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _image_column(split, image_column: str):
    """The split's image column, read undecoded (we decode, so that a broken file is named by index and path)."""
    import datasets

    if image_column not in split.column_names:
        raise DataError(
            f"column {image_column!r} not found (columns: {', '.join(split.column_names)}): "
            "pass the right one with --image_column."
        )
    if len(split) == 0:
        raise DataError("the dataset has no images: check --dataset_name / --train_data_dir.")
    column = split.select_columns([image_column])
    if isinstance(column.features[image_column], datasets.Image):
        column = column.cast_column(image_column, datasets.Image(decode=False))
    return column


def _source_row(column, index: int) -> int:
    """The row of the dataset as stored that item `index` of a split made by `train_test_split`/`select` comes from
    (datasets keeps that mapping as the split's indices table), so that a message names the row the user can find."""
    indices = column._indices
    return index if indices is None else indices.column(0)[index].as_py()


def _dataset_mode(columns, image_column: str) -> str:
    """L when every image of every split is grayscale, else RGB: decided over the whole dataset from the image
    headers (not the first image, which a shuffle can make any one), so that train and validation agree."""
    for column in columns:
        for index, row in enumerate(column):
            item = row[image_column]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    mode = _image_mode(_open_header(item))
            except Exception:
                _open_or_explain(item, _source_row(column, index))  # raises the one-line message for this image
                raise
            if mode == "RGB":
                return "RGB"
    return "L"


def _open_header(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if not isinstance(item, dict) or not (item.get("bytes") or item.get("path")):
        raise DataError("not an image")
    return Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])


def _decode_split(column, image_column: str, mode: str, resolution: int, center_crop: bool, path: Path, desc: str) -> None:
    """Decode every image of `column` into a `.npy` file at `path`, written atomically."""
    from tqdm.auto import tqdm

    channels = 1 if mode == "L" else 3
    tmp_path = path.with_suffix(f".{os.getpid()}.tmp.npy")
    array = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(len(column), channels, resolution, resolution))
    try:
        with stop_cleanly_on_sigterm("decoding images"):
            for index, row in enumerate(tqdm(column, desc=desc, leave=False)):
                array[index] = _decode(_open_or_explain(row[image_column], _source_row(column, index)), mode, resolution, center_crop)
            array.flush()
            del array
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():  # cut off (an error, Ctrl-C, SIGTERM): no partial cache is left behind
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
        """uint8 images at `indices` as a float tensor in [-1, 1], on the device the images are on."""
        # Sorted reads are sequential on disk; the order inside a batch does not matter for training.
        return _gather(self.images, np.sort(indices)).float().div_(127.5).sub_(1.0)

    def batch_labels(self, indices: np.ndarray) -> torch.Tensor:
        """int64 class labels at `indices`, in the order `batch` returns the images (sorted indices)."""
        return _gather(self.labels, np.sort(indices)).long()

    @property
    def nbytes(self) -> int:
        return self.images.nbytes if isinstance(self.images, np.ndarray) else self.images.numel() * self.images.element_size()

    def to(self, device: torch.device | str) -> "ImageCache":
        """A copy whose images (and labels) live on `device`: batches are then gathered and converted there, with
        no host work or transfer per step but that of the indices."""
        labels = None if self.labels is None else torch.from_numpy(np.array(self.labels)).to(device)
        return replace(self, images=torch.from_numpy(np.array(self.images)).to(device), labels=labels)


def _gather(array: np.ndarray | torch.Tensor, sorted_indices: np.ndarray) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array[torch.from_numpy(sorted_indices).to(array.device)]
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
    dataset, content_digest = _load_dataset_dict(dataset_name, train_data_dir)
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
        paths[name] = _cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}-{name}.npy"
    labels = {name: None if classes is None else read_labels(split, label_column, len(classes), name) for name, split in splits.items()}
    if is_main_process and not all(path.exists() for path in paths.values()):
        columns = {name: _image_column(split, image_column) for name, split in splits.items()}
        mode = _dataset_mode(columns.values(), image_column)
        for name, path in paths.items():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                _decode_split(columns[name], image_column, mode, resolution, center_crop, path, desc=f"decoding {name} images")
    wait_for_everyone()
    caches = []
    for name in splits:
        cache = ImageCache(np.load(paths[name], mmap_mode="r"))
        if labels[name] is not None:
            cache.labels, cache.num_classes, cache.class_names = labels[name], len(classes), classes
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
        self._permuted_epoch, self._order = None, None
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_images} images are fewer than one batch of {batch_size} x {num_processes} processes: "
                "lower --train_batch_size or add data."
            )

    def indices(self, epoch: int, batch_in_epoch: int) -> np.ndarray:
        """Image indices of one batch: every process uses the same permutation, each its own slice."""
        permutation = self._permutation(epoch)
        start = (batch_in_epoch * self.num_processes + self.process_index) * self.batch_size
        return permutation[start : start + self.batch_size]

    def _permutation(self, epoch: int) -> np.ndarray:
        # Drawn once per epoch, not per batch: shuffling 60,000 indices costs about a millisecond, a GPU step less.
        if self._permuted_epoch != epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
            self._permuted_epoch = epoch
        return self._order


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2, drawn on the images' device (the generator's too)."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
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
