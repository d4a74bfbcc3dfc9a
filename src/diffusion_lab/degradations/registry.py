"""Degradations by the names `train_cold.py --degradation` accepts."""

from .degradation import Degradation
from .gaussian_blur import GaussianBlur
from .growing_mask import GrowingMask
from .pixelation import Pixelation
from .row_column_averaging import RowColumnAveraging

DEGRADATIONS = {
    "rows": (RowColumnAveraging, {"orientation": "rows"}),
    "columns": (RowColumnAveraging, {"orientation": "columns"}),
    "blur": (GaussianBlur, {}),
    "pixelate": (Pixelation, {}),
    "mask": (GrowingMask, {}),
}


def build_degradation(name: str, **config) -> Degradation:
    """The degradation called `name`, with `config` overriding its defaults (e.g. group_size=4 for rows)."""
    if name not in DEGRADATIONS:
        raise ValueError(f"degradation {name!r} is unknown: use one of {', '.join(DEGRADATIONS)}.")
    degradation_class, fixed = DEGRADATIONS[name]
    return degradation_class(**{**config, **fixed})
