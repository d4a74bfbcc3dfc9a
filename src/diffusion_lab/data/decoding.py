"""Decoding dataset images once into a uint8 array: image modes, 8-bit conversion, resizing, and the decode loop."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..stopping import stop_cleanly_on_sigterm
from .sources import DataError

GRAYSCALE_MODES = ("1", "L", "LA", "La")
# 32-bit integer and float images have no defined intensity range (0..1? 0..255? 0..65535?): refused, not guessed.
UNDEFINED_RANGE_MODES = ("I", "F")


def _is_16_bit(image: Image.Image) -> bool:
    return image.mode.startswith("I;16")


def image_mode(image: Image.Image) -> str:
    """Grayscale (1, 8 or 16 bits) stays one channel, everything else becomes RGB."""
    return "L" if image.mode in GRAYSCALE_MODES or _is_16_bit(image) else "RGB"


def to_8_bit(image: Image.Image) -> Image.Image:
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
    mode = mode or image_mode(image)
    try:
        return np.asarray(to_8_bit(image).convert(mode), dtype=np.uint8)
    except ValueError as error:
        raise DataError(f"image {index} ({path}) of mode {image.mode} cannot be converted to {mode} ({error}): convert it to RGB or grayscale.") from None


def _decode(image: Image.Image, mode: str, resolution: int, center_crop: bool) -> np.ndarray:
    try:
        image = to_8_bit(image).convert(mode)
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


def image_column_of(split, image_column: str):
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


def dataset_mode(columns, image_column: str) -> str:
    """L when every image of every split is grayscale, else RGB: decided over the whole dataset from the image
    headers (not the first image, which a shuffle can make any one), so that train and validation agree."""
    for column in columns:
        for index, row in enumerate(column):
            item = row[image_column]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    mode = image_mode(_open_header(item))
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


def decode_split(column, image_column: str, mode: str, resolution: int, center_crop: bool, path: Path, desc: str) -> None:
    """Decode every image of `column` into a `.npy` file at `path`, written atomically."""
    from tqdm.auto import tqdm

    channels = 1 if mode == "L" else 3
    tmp_path = path.with_suffix(f".{os.getpid()}.tmp.npy")
    try:
        with stop_cleanly_on_sigterm("decoding images"):  # from before the file exists, so a SIGTERM never leaves it
            array = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(len(column), channels, resolution, resolution))
            for index, row in enumerate(tqdm(column, desc=desc, leave=False)):
                array[index] = _decode(_open_or_explain(row[image_column], _source_row(column, index)), mode, resolution, center_crop)
            array.flush()
            del array
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():  # cut off (an error, Ctrl-C, SIGTERM): no partial cache is left behind
            tmp_path.unlink()
