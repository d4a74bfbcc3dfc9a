"""Checkpoint folders: atomic writes, `latest`, pruning.

A checkpoint is written to `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` only once complete, so a
folder with the final name is always whole and a run killed mid-write leaves only a `.tmp` to ignore (and to
remove at the next save).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..staging import staging_folder

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Written by accelerator.save_state (with our hook for the model); a checkpoint lacking one cannot resume exactly.
CHECKPOINT_FILES = ("model/config.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


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
            raise FileNotFoundError(
                f"no complete checkpoint in {output_dir}: to start afresh, drop --resume_from_checkpoint "
                "(add --overwrite_output_dir if the folder holds the start of a run)."
            )
        path = checkpoints[-1]
    else:
        path = Path(resume_from_checkpoint)
        if not CHECKPOINT_PATTERN.match(path.name) or not path.is_dir():
            raise FileNotFoundError(f"{path} is not a complete checkpoint folder: pass 'latest' or an existing checkpoint-<step> folder.")
    missing = [name for name in CHECKPOINT_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {path} is damaged (missing {', '.join(missing)}): pass an earlier checkpoint-<step> folder "
            "to --resume_from_checkpoint, or delete this one to make the previous one 'latest'."
        )
    return path


def step_of(checkpoint: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def prune_checkpoints(output_dir: Path, keep: int | None, newest: Path, kept_steps=None) -> None:
    """Keep `newest` (the checkpoint just written) and the `keep - 1` highest-numbered other complete checkpoints;
    checkpoints whose step `kept_steps(step)` says to keep (--keep_epoch_checkpoints) are never removed nor counted."""
    if keep is None:
        return
    others = [path for path in complete_checkpoints(output_dir)
              if path != newest and not (kept_steps is not None and kept_steps(step_of(path)))]
    for old in others[: max(len(others) - (keep - 1), 0)]:
        shutil.rmtree(old)


def save_checkpoint(accelerator, output_dir: Path, step: int, total_limit: int | None, kept_steps=None) -> Path:
    """`accelerator.save_state` into a temporary folder, then rename it into place (all processes call this).
    `kept_steps(step)`: checkpoints pruning must leave (see `prune_checkpoints`)."""
    final = output_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        for stale in output_dir.glob("checkpoint-*.tmp"):  # left by a run killed mid-write
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    with staging_folder(output_dir / f"{final.name}.tmp", final.name, owner=accelerator.is_main_process) as staging:
        accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # A step redone after resuming from an earlier checkpoint: the old copy is removed only once replaced.
        replaced = final.rename(output_dir / f"{final.name}.replaced.tmp") if final.exists() else None
        staging.rename(final)
        if replaced is not None:
            shutil.rmtree(replaced)
        prune_checkpoints(output_dir, total_limit, newest=final, kept_steps=kept_steps)
    accelerator.wait_for_everyone()
    return final
