"""Path arguments the file system can hold: a name too long (ENAMETOOLONG) is refused before any work, naming its
flag, instead of failing with the OS error wherever the path is first used (after training or sampling, perhaps)."""

from __future__ import annotations

import os
from pathlib import Path

# POSIX minimums, for file systems that do not say (pathconf fails).
DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def check_path_name(path: str | os.PathLike, flag: str) -> None:
    """Refuse `path` (given as `flag`) when one of its names, or the whole path, is longer than the file system where
    it lies allows. Limits come from its deepest existing folder; a Hub id is checked like a relative path."""
    absolute = Path(os.path.abspath(path))
    folder = next((parent for parent in absolute.parents if os.path.isdir(parent)), absolute)  # isdir never raises; '/' has no parent
    name_max = _limit(folder, "PC_NAME_MAX", DEFAULT_NAME_MAX)
    for name in absolute.parts:
        if len(os.fsencode(name)) > name_max:
            raise ValueError(
                f"{flag}: the file name {name[:20]}... is {len(os.fsencode(name))} bytes long, more than the {name_max} "
                "this file system allows: choose a shorter name."
            )
    path_max = _limit(folder, "PC_PATH_MAX", DEFAULT_PATH_MAX)
    if len(os.fsencode(str(absolute))) >= path_max:
        raise ValueError(
            f"{flag}: the path {str(absolute)[:40]}... is {len(os.fsencode(str(absolute)))} bytes long, more than the "
            f"{path_max - 1} this file system allows: choose a shorter path."
        )


def name_for_outputs(path: str | os.PathLike, flag: str) -> str:
    """The name that outputs written beside `path` are named after: its last component once `.` and `..` are
    resolved (`.` is the current folder's name; a Hub id `user/model` gives `model`). The root has none: refused,
    naming the `flag` that sets the output instead."""
    name = Path(os.path.abspath(path)).name
    if not name:
        raise ValueError(f"{path} has no name to name the outputs after: pass {flag}.")
    return name
