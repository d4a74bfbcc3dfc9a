"""Where training images come from: the shipped MNIST, a local folder, or a Hub dataset; and their class labels."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

# The MNIST copy shipped inside the package (same schema as the Hub's `ylecun/mnist`).
SHIPPED_MNIST = Path(__file__).resolve().parent / "mnist"
VALIDATION_SPLIT_NAMES = ("test", "validation", "valid", "val")


class DataError(ValueError):
    """Bad or missing training data; the message names the problem and the fix."""


def cache_dir() -> Path:
    """Where decoded images and source digests are kept (DIFFUSION_LAB_CACHE, else ~/.cache/diffusion_lab)."""
    return Path(os.environ.get("DIFFUSION_LAB_CACHE", Path.home() / ".cache" / "diffusion_lab"))


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


def load_dataset_dict(dataset_name: str | None, train_data_dir: str | None):
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
        raise DataError(f"the shipped MNIST copy is missing at {path}: reinstall diffusion-lab or pass --dataset_name.")
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
    record = cache_dir() / "sources" / f"{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]}.txt"
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
    labels = class_label_array(split.with_format("numpy")[label_column], f"--class_conditional: column {label_column!r}")
    return [str(value) for value in range(len(np.unique(labels)))]  # a null is refused, never counted as a class


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
    return class_label_array(split.with_format("numpy")[label_column], f"--class_conditional: {split_name}", num_classes,
                             fix=f"fix the labels in column {label_column!r}")


def class_label_array(values, what: str, num_classes: int | None = None, fix: str = "fix the labels") -> np.ndarray:
    """`values` as int64 class labels, one per image, refused in one line (naming `what` and the first bad image) if
    one is null (a NaN, None), not a whole number, negative, or -- given `num_classes` -- not below it."""
    array = np.asarray(values)
    if array.dtype.kind == "O":  # a column with nulls or mixed values
        array = np.array([np.nan if value is None else value for value in array])
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise DataError(f"{what} {array.dtype} values of shape {array.shape} are not one integer class label per image: {fix}.")
    numbers = array.astype(np.float64)
    last = "" if num_classes is None else f", outside 0..{num_classes - 1} ({num_classes} classes)"
    problems = [  # in this order: a null is reported as such, not as a number out of range
        (np.isnan(numbers), "has no label (null)"),
        (~np.isfinite(numbers) | (numbers != np.floor(numbers)), "has label {}, not a whole number"),
        (numbers < 0, "has label {}" + (last or ", a negative class")),
        (numbers >= (np.inf if num_classes is None else num_classes), "has label {}" + last),
    ]
    for bad, problem in problems:
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise DataError(f"{what} image {index} {problem.format(array[index].item())}: {fix}.")
    return array.astype(np.int64)
