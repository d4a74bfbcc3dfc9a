"""Read image sets to evaluate: a dataset split, a folder of PNGs, or an .npz array, as uint8 (N, C, H, W)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import SHIPPED_MNIST


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
    mode = "L" if all(image.mode == "L" for image in pil_images[:16]) else "RGB"
    images = torch.from_numpy(np.stack([np.asarray(image.convert(mode)) for image in pil_images]))
    images = images[:, None] if mode == "L" else images.permute(0, 3, 1, 2)
    labels = torch.tensor(data[label_column]) if label_column is not None else None
    return images.contiguous(), labels


def load_png_folder(folder: str | Path) -> torch.Tensor:
    """All *.png in a folder (sorted by name), as uint8 (N, C, H, W); every image must have the same size and mode."""
    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise ValueError(f"No .png files in {folder}: pass a folder of generated images, an .npz, or a pipeline.")
    arrays = [np.asarray(Image.open(path)) for path in paths]
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
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            if len(archive.files) != 1:
                raise ValueError(f"{path} has arrays {archive.files} and no {key!r}: name the one to evaluate.")
            key = archive.files[0]
        array = archive[key]
    return to_nchw(torch.from_numpy(array), source=f"{path}[{key}]")


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
