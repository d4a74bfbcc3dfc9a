"""Folders written into a staging folder first and moved into place only once complete.

A run killed mid-write, or a disk that fills up, then leaves at most a stray staging folder behind -- never a
half-written checkpoint or pipeline where a complete one is expected.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

# What writers raise when the disk is full: OSError from Python, RuntimeError from torch.save, SafetensorError.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


class WriteError(OSError):
    """A checkpoint or pipeline could not be written (disk full, quota...); everything saved before is intact."""


@contextmanager
def staging_folder(path: Path, what: str, owner: bool = True):
    """Write into `path` (absent at the start); on failure remove it and raise a one-line WriteError naming `what`.

    With several processes writing into one folder, only the `owner` removes it.
    """
    try:
        yield path
    except WRITE_ERRORS as error:
        if owner:
            shutil.rmtree(path, ignore_errors=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip().splitlines()[0]
        raise WriteError(
            f"could not write {what} ({reason}): free disk space or choose another --output_dir; "
            "everything saved before is intact."
        ) from error
