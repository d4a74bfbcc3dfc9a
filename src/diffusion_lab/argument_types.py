"""The one way every command parses its flags: `CommandParser`, and range-checked number types for `type=`.

A number is checked where it is parsed, so a value out of range is refused before any file or folder is made, in
the same words for every command: `error: --seed -1 must be between 0 and 4294967295.` (one line, status 2).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from .path_names import check_path_name
from .run_files import hide_secrets, secret_values

MAX_SEED = 2**32 - 1  # numpy's limit, and torch.manual_seed's


class Number:
    """A `type=` for a number between `low` and `high` (None: unbounded; `low_open` / `high_open`: that end itself
    excluded). Floats must be finite; integers must be written as integers (`3.5`, `1e3` are refused, not cut)."""

    def __init__(self, kind: type, low=None, high=None, low_open=False, high_open=False, requirement: str | None = None):
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.requirement = requirement or self._describe()

    def _describe(self) -> str:
        low, high = (f"{end:g}" if isinstance(end, float) else str(end) for end in (self.low, self.high))
        if self.low is not None and self.high is not None:
            if not (self.low_open or self.high_open):
                return f"must be between {low} and {high}"
            return f"must be in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"must be {'above' if self.low_open else 'at least'} {low}"
        return "must be a finite number" if self.kind is float else "must be an integer"

    def accepts(self, value) -> bool:
        above_low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below_high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above_low and below_high

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            kind = "a number" if self.kind is float else "an integer"
            raise argparse.ArgumentTypeError(f"{text} is not {kind}: it {self.requirement}.") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number.")
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"{text} {self.requirement}.")
        return value


integer = Number(int)
positive_int = Number(int, 1, requirement="must be a positive integer")
non_negative_int = Number(int, 0, requirement="must not be negative")
seed = Number(int, 0, MAX_SEED)
at_least_two = Number(int, 2)  # diffusion steps T, images for a distribution metric
real = Number(float)
positive_float = Number(float, 0.0, low_open=True, requirement="must be a positive number")
non_negative_float = Number(float, 0.0, requirement="must not be negative")
fraction = Number(float, 0.0, 1.0, high_open=True)  # [0, 1): a probability of dropping, a decay rate
open_unit_interval = Number(float, 0.0, 1.0, low_open=True, high_open=True)  # (0, 1): a held-out share, a beta


def path_name(text: str) -> str:
    """A `type=` for a file or folder path (or a Hub id): any path a user can type; an empty one is refused."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a path: pass a file or folder name.")
    return text


def path(text: str) -> Path:
    """`path_name`, as a Path."""
    return Path(path_name(text))


def dataset_path(text: str) -> str:
    """A `type=` for a dataset folder or Hub id: `path_name`, but not the file system root (datasets' loader fails on
    it, after hashing every file below it)."""
    absolute = Path(os.path.abspath(path_name(text)))
    if absolute == absolute.parent:
        raise argparse.ArgumentTypeError(f"{text} is the file system root, not a dataset: pass the folder that holds the data.")
    return text


def png_path(text: str) -> str:
    """A `type=` for a figure to write: `path_name` ending in .png (matplotlib would add the suffix to any other
    name, and write somewhere else than the command says)."""
    if Path(path_name(text)).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text} is not a .png file name: pass one, e.g. schedules.png.")
    return text


PATH_TYPES = (path_name, path, dataset_path, png_path)  # what marks a flag as a path

# argparse's messages: "argument --seed: -1 must be ..." and "unrecognized arguments: --hub_tok hf_...".
ARGUMENT_PREFIX = re.compile(r"^argument (\S+?)(/\S+)?: ")
UNRECOGNIZED = "unrecognized arguments: "


class CommandParser(argparse.ArgumentParser):
    """argparse, with its errors as one line in the form of every other refusal, and no token value in it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})  # `--hub_tok` is never read as `--hub_token`

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # what error() must keep token values out of
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(namespace, action.dest, None)
            if action.type in PATH_TYPES and value is not None:
                check_path_name(value, action.option_strings[-1] if action.option_strings else action.metavar)
        return namespace, extras

    def error(self, message: str):
        argv = getattr(self, "_argv", [])
        if message.startswith(UNRECOGNIZED):  # name the flags, never echo the values (one may be a token)
            words = message[len(UNRECOGNIZED):].split()
            flags = [word.split("=", 1)[0] for word in words if word.startswith("-")]
            values = len(words) - len(flags)
            unnamed = f" (and {values} value(s), not repeated)" if values else ""
            message = f"{UNRECOGNIZED}{' '.join(flags)}{unnamed}: check the spelling ({self.prog} --help lists the flags)."
        else:
            message = ARGUMENT_PREFIX.sub(r"\1 ", message)
        print(f"error: {hide_secrets(message, secret_values(argv=argv))}", file=sys.stderr)
        sys.exit(2)
