"""Degradations by the names `train_cold.py --degradation` accepts, and the options each of them takes.

The contract is data: `DegradationOptions` lists every option a degradation can be given (None keeps the
degradation's default) and each `RegisteredDegradation` names the ones its class takes, so whether e.g.
`kernel_size` applies to `rows` is looked up here. This file is not remote code (it never travels with pipelines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from .degradation import Degradation
from .gaussian_blur import GaussianBlur
from .growing_mask import GrowingMask
from .pixelation import Pixelation
from .row_column_averaging import RowColumnAveraging


def _option(dest: str | None = None):
    """A field of `DegradationOptions`; `dest` names the command-line flag when it differs from the config name."""
    return field(default=None, metadata={} if dest is None else {"dest": dest})


@dataclass(frozen=True)
class DegradationOptions:
    """Every degradation option `train_cold.py` can set, by config name; None keeps the degradation's default.

    Each field is set by the flag of the same name, except `seed` (`--order_seed`).
    """

    order: str | None = _option()
    group_size: int | None = _option()
    group_mode: str | None = _option()
    seed: int | None = _option("order_seed")
    num_levels: int | None = _option()
    kernel_size: int | None = _option()
    kernel_std: float | None = _option()
    kernel_std_growth: float | None = _option()
    padding_mode: str | None = _option()
    block_sizes: Sequence[int] | None = _option()
    rings_per_level: int | None = _option()
    fill_value: float | None = _option()

    @classmethod
    def from_args(cls, args) -> DegradationOptions:
        """The options from parsed `train_cold.py` arguments (an `argparse.Namespace`)."""
        return cls(**{option.name: getattr(args, option.metadata.get("dest", option.name)) for option in fields(cls)})

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag that sets option `name`, e.g. `--order_seed` for seed."""
        option = next(option for option in fields(cls) if option.name == name)
        return "--" + option.metadata.get("dest", name)

    def given(self) -> dict[str, object]:
        """The options that are set (not None), in field order."""
        return {option.name: getattr(self, option.name) for option in fields(self) if getattr(self, option.name) is not None}


OPTION_NAMES = frozenset(option.name for option in fields(DegradationOptions))


@dataclass(frozen=True)
class RegisteredDegradation:
    """One `--degradation` name: its class, the config the name fixes (e.g. orientation) and the
    `DegradationOptions` its class takes; the class's other config entry is sample_size."""

    degradation_class: type[Degradation]
    options: frozenset[str]
    fixed: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def refused(self, options: DegradationOptions) -> list[str]:
        """The options set in `options` that this degradation does not take."""
        return [option for option in options.given() if option not in self.options]

    def __post_init__(self):
        unknown = self.options - OPTION_NAMES
        if unknown:
            raise ValueError(f"{self.degradation_class.__name__} lists options {sorted(unknown)} that DegradationOptions lacks.")


ROW_COLUMN_OPTIONS = frozenset({"order", "group_size", "group_mode", "seed"})
DEGRADATIONS: Mapping[str, RegisteredDegradation] = MappingProxyType({
    "rows": RegisteredDegradation(RowColumnAveraging, ROW_COLUMN_OPTIONS, MappingProxyType({"orientation": "rows"})),
    "columns": RegisteredDegradation(RowColumnAveraging, ROW_COLUMN_OPTIONS, MappingProxyType({"orientation": "columns"})),
    "blur": RegisteredDegradation(GaussianBlur, frozenset({"num_levels", "kernel_size", "kernel_std", "kernel_std_growth", "padding_mode"})),
    "pixelate": RegisteredDegradation(Pixelation, frozenset({"block_sizes"})),
    "mask": RegisteredDegradation(GrowingMask, frozenset({"rings_per_level", "fill_value"})),
})


def build_degradation(name: str, options: DegradationOptions | None = None, sample_size=28) -> Degradation:
    """The degradation called `name`, `options` overriding its defaults (e.g. DegradationOptions(group_size=4) for
    rows), for images of `sample_size` (a side, or (height, width)). Unknown names and options the degradation does
    not take raise ValueError."""
    if name not in DEGRADATIONS:
        raise ValueError(f"degradation {name!r} is unknown: use one of {', '.join(DEGRADATIONS)}.")
    entry, options = DEGRADATIONS[name], DegradationOptions() if options is None else options
    refused = entry.refused(options)
    if refused:
        raise ValueError(f"option {refused[0]} does not apply to degradation {name!r}: use one of {', '.join(sorted(entry.options))}.")
    return entry.degradation_class(sample_size=sample_size, **options.given(), **entry.fixed)
