"""Checkpoint folders: atomic writes, `latest`, pruning.

A checkpoint is written to `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` only once complete, so a
folder with the final name is always whole and a run killed mid-write leaves only a `.tmp` to ignore.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in output_dir.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def resolve_resume_path(output_dir: Path, resume_from_checkpoint: str) -> Path:
    """The checkpoint folder `--resume_from_checkpoint` names ('latest' or a path)."""
    if resume_from_checkpoint == "latest":
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise FileNotFoundError(f"no complete checkpoint in {output_dir}: drop --resume_from_checkpoint to start afresh.")
        return checkpoints[-1]
    path = Path(resume_from_checkpoint)
    if not CHECKPOINT_PATTERN.match(path.name) or not path.is_dir():
        raise FileNotFoundError(f"{path} is not a complete checkpoint folder: pass 'latest' or an existing checkpoint-<step> folder.")
    return path


def step_of(checkpoint: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints; the newest is never removed."""
    checkpoints = complete_checkpoints(output_dir)
    if keep is None or len(checkpoints) <= keep:
        return
    for old in checkpoints[: len(checkpoints) - max(keep, 1)]:
        shutil.rmtree(old)


def save_checkpoint(accelerator, output_dir: Path, step: int, total_limit: int | None) -> Path:
    """`accelerator.save_state` into a temporary folder, then rename it into place (all processes call this)."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final
