"""Read image sets to evaluate: a dataset split, a folder of PNGs, or an .npz array, as uint8 (N, C, H, W)."""

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..data import SHIPPED_MNIST
from ..data.decoding import image_mode, read_image, to_8_bit


def load_dataset_images(
    dataset: str | Path | None = None, split: str = "test", image_column: str = "image", label_column: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode a split of a Hub or local dataset once into uint8 (N, C, H, W), with labels if asked for.

    `dataset=None` is the shipped MNIST. Grayscale stays 1 channel, anything else becomes RGB.
    """
    import datasets

    dataset = str(SHIPPED_MNIST if dataset is None else dataset)
    try:
        data = datasets.load_dataset(dataset, split=split)
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(
            f"Dataset {dataset} not found: pass an existing dataset folder, or a Hub id (online, or cached when offline)."
        ) from error
    for column in (image_column, label_column):
        if column is not None and column not in data.column_names:
            raise ValueError(
                f"Column {column!r} is not in the dataset (columns: {data.column_names}): pass the right column name."
            )
    pil_images = data[image_column]
    mode = "L" if all(image_mode(image) == "L" for image in pil_images[:16]) else "RGB"
    images = torch.from_numpy(np.stack([np.asarray(to_8_bit(image).convert(mode)) for image in pil_images]))
    images = images[:, None] if mode == "L" else images.permute(0, 3, 1, 2)
    labels = torch.tensor(data[label_column]) if label_column is not None else None
    return images.contiguous(), labels


def load_png_folder(folder: str | Path) -> torch.Tensor:
    """All *.png in a folder (sorted by name), as uint8 (N, C, H, W); every image must have the same size and mode."""
    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise ValueError(f"No .png files in {folder}: pass a folder of generated images, an .npz, or a pipeline.")
    # Decoded as the training data is: palette images as colours, 16-bit scaled to 8, alpha dropped, 32-bit refused.
    first = read_image(paths[0], 0)
    mode = "L" if first.ndim == 2 else "RGB"
    arrays = [first, *(read_image(path, index, mode) for index, path in enumerate(paths[1:], start=1))]
    for path, array in zip(paths, arrays):
        if array.shape != arrays[0].shape:
            raise ValueError(
                f"{path.name} has shape {array.shape} but {paths[0].name} has {arrays[0].shape}: "
                "keep only the single images (not grids) in the folder."
            )
    images = torch.from_numpy(np.stack(arrays))
    return images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)


def load_npz_images(path: str | Path, key: str = "images") -> torch.Tensor:
    """One array of an .npz, in (N, H, W), (N, H, W, C) or (N, C, H, W) layout, as a (N, C, H, W) tensor.

    `key` may be omitted when the file holds a single array. The dtype is kept: the caller declares the range.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                if len(archive.files) != 1:
                    raise ValueError(f"{path} has arrays {archive.files} and no {key!r}: name the one to evaluate.")
                key = archive.files[0]
            _check_array_size(archive, key, path)
            array = archive[key]
    except (zipfile.BadZipFile, EOFError, MemoryError) as error:
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}): pass an .npz written by numpy.savez.") from None
    except ValueError as error:
        if str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path} cannot be read ({error}): pass an .npz written by numpy.savez.") from None
    return to_nchw(torch.from_numpy(array), source=f"{path}[{key}]")


def _check_array_size(archive, key: str, path) -> None:
    """Refuse, before allocating anything, an array whose header claims more bytes than the file holds or than
    this machine's memory."""
    member = archive.zip.getinfo(f"{key}.npy")
    with archive.zip.open(member) as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(file)
        header_size = file.tell()
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > member.file_size - header_size:
        raise ValueError(
            f"{path}[{key}] claims shape {shape} ({claimed:,} bytes) but holds {member.file_size - header_size:,} bytes: "
            "the file is damaged or not written by numpy.savez."
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory and claimed > memory // 2:
        raise ValueError(f"{path}[{key}] holds {claimed:,} bytes, more than half this machine's memory: evaluate a subset.")


def to_nchw(images: torch.Tensor, source: str = "images") -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W); channels-last (N, H, W, 1|3) -> (N, C, H, W); (N, 1|3, H, W) unchanged."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    if images.ndim == 4 and images.shape[3] in (1, 3):
        return images.permute(0, 3, 1, 2).contiguous()
    raise ValueError(
        f"{source} has shape {tuple(images.shape)}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3."
    )


def declared_range(images: torch.Tensor, pixel_range: str | None, source: str) -> str:
    """`--pixel_range` when given; uint8 images need none, float images must have one."""
    if pixel_range is not None or images.dtype == torch.uint8:
        return pixel_range or "uint8"
    raise ValueError(f"{source} holds {images.dtype} images: declare their range with --pixel_range.")


def load_images(path: str, npz_key: str = "images") -> torch.Tensor:
    return load_npz_images(path, npz_key) if str(path).endswith(".npz") else load_png_folder(path)


def load_npz_labels(path: str) -> np.ndarray | None:
    """The `labels` array of an .npz written by `sample` from a class-conditional pipeline, as stored (checked where
    the number of classes is known: `evaluate_images`), else None."""
    if not str(path).endswith(".npz"):
        return None
    with np.load(path) as data:
        if "labels" not in data.files:
            return None
        try:
            return data["labels"]
        except ValueError:  # numpy refuses to unpickle an object array (nulls, mixed values)
            raise ValueError(f"{path}[labels] holds Python objects (nulls or mixed values), not integer class labels: "
                             "pass one intended class 0..K-1 per image.") from None
