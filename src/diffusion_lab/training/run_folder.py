"""What a run folder holds, and the guard that keeps one run from overwriting another."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

# Files that show a folder already holds a run (ours or any saved pipeline).
RUN_MARKERS = ("model_index.json", "metrics.jsonl", "training_args.json")


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse to train into a folder holding another run unless resuming or told to overwrite."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a folder path.")
    holds_run = output_dir.is_dir() and (
        any((output_dir / marker).exists() for marker in RUN_MARKERS) or any(output_dir.glob("checkpoint-*"))
    )
    if holds_run and not (resuming or overwrite):
        raise FileExistsError(
            f"--output_dir {output_dir} already holds a run: pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to replace it, or another --output_dir."
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"cannot write to --output_dir {output_dir} ({error.strerror}): choose a writable folder.") from None


def _local_path_free(value):
    """Absolute paths reveal the user's machine: keep only the last component."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def public_args(args: argparse.Namespace) -> dict:
    """The flags worth recording: no token, no absolute local paths."""
    return {key: _local_path_free(value) for key, value in vars(args).items() if key != "hub_token"}


def write_run_info(output_dir: Path, args: argparse.Namespace, argv: list[str]) -> None:
    words = [Path(argv[0]).name] + [_local_path_free(arg) for arg in _without_token(argv[1:])]
    info = {"command": "accelerate launch " + " ".join(shlex.quote(word) for word in words), "args": public_args(args)}
    tmp = output_dir / "training_args.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, output_dir / "training_args.json")


def _without_token(argv: list[str]) -> list[str]:
    cleaned, skip = [], False
    for arg in argv:
        if skip:
            cleaned.append("***")
            skip = False
        elif arg == "--hub_token":
            cleaned.append(arg)
            skip = True
        elif arg.startswith("--hub_token="):
            cleaned.append("--hub_token=***")
        else:
            cleaned.append(arg)
    return cleaned
