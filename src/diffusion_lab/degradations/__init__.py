"""Deterministic degradations D(x, t) for cold diffusion, one per file; each travels with saved pipelines."""

from .degradation import Degradation
from .gaussian_blur import GaussianBlur
from .growing_mask import GrowingMask
from .pixelation import Pixelation
from .registry import (
    DEGRADATIONS,
    DegradationOptions,
    RegisteredDegradation,
    build_degradation,
)
from .row_column_averaging import RowColumnAveraging

__all__ = [
    "DEGRADATIONS", "Degradation", "DegradationOptions", "GaussianBlur", "GrowingMask", "Pixelation", "RegisteredDegradation",
    "RowColumnAveraging", "build_degradation",
]
