"""The guard that keeps one run from overwriting another: the output folder check, the run lock, moving an earlier run aside."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

# The lock of the run that owns the folder (hidden: never uploaded, never taken for output).
LOCK_NAME = ".run.lock"


class RunFolderBusy(FileExistsError):
    """Another run holds the folder's lock."""


def earlier_output(output_dir: Path) -> list[str]:
    """What the folder holds besides our lock: any existing output counts, not one marker file."""
    if not output_dir.is_dir():
        return []
    return sorted(path.name for path in output_dir.iterdir() if not path.name.startswith(LOCK_NAME))


def check_output_apart_from_inputs(output_dir: str | None, inputs: dict[str, str | None]) -> None:
    """Refuse an --output_dir that is, is inside, or contains an input of the run (`inputs`: flag -> path; values
    that name no existing path, Hub ids, are skipped): the run would write among its inputs, and
    --overwrite_output_dir would move them aside."""
    if output_dir is None:
        return
    output = Path(output_dir).resolve()
    for flag, value in inputs.items():
        if value is None or not Path(value).exists():
            continue
        given = Path(value).resolve()
        relation = "is" if output == given else "is inside" if given in output.parents else "contains" if output in given.parents else None
        if relation:
            raise ValueError(
                f"--output_dir {output_dir} {relation} the {flag} {value}: the run would write among (and "
                "--overwrite_output_dir move aside) what it reads; choose an --output_dir apart from it."
            )


def check_output_dir(output_dir: Path, resuming: bool, overwrite: bool) -> None:
    """Refuse a folder the run cannot use, writing nothing: a file, a folder holding another run (unless resuming or
    told to overwrite), a folder that cannot be created or written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file: pass a folder path.")
    held = earlier_output(output_dir)
    if held and not (resuming or overwrite):
        raise FileExistsError(
            f"--output_dir {output_dir} already holds a run ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}): pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or another --output_dir."
        )
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = "Not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = "Permission denied"
    elif overwrite and held and not os.access(output_dir.resolve().parent, os.W_OK | os.X_OK):
        reason = "its parent folder is not writable, so the earlier run cannot be moved aside"
    elif overwrite and held and output_dir.resolve() in (Path.cwd(), *Path.cwd().parents):
        reason = "it holds the current folder, so the earlier run cannot be moved aside"
    if reason:
        raise PermissionError(f"cannot write to --output_dir {output_dir} ({reason}): choose a writable folder.")


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux: /proc/<pid>/stat field 22), which tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder for the whole run: `<output_dir>/.run.lock`, holding the owner's pid, host
    and process start time.

    The lock file is written completely under another name and hard-linked into place, which fails if a lock
    exists: two runs cannot both take it. A lock whose owner is gone (same host, and that pid no longer runs or now
    belongs to a process started at another time) is stale: it is taken over, so a crashed run never wedges the
    folder. A lock from another host cannot be checked and is refused, with the way out.
    """

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "id": os.urandom(8).hex()}
        self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, holder: dict) -> bool:
        if holder.get("host") != self.owner["host"]:
            return False
        if not _process_alive(holder["pid"]):
            return True
        return holder.get("start") is not None and _process_start(holder["pid"]) not in (None, holder["start"])

    def acquire(self) -> None:
        staged = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        staged.write_text(json.dumps(self.owner) + "\n")
        try:
            for _ in range(3):
                try:
                    os.link(staged, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    holder = self._holder()
                    if holder is None:  # released meanwhile: try again
                        continue
                    if not holder:
                        raise RunFolderBusy(
                            f"--output_dir {self.path.parent} has an unreadable lock {self.path}: if no run uses the "
                            "folder, delete that file and rerun."
                        ) from None
                    if not self._is_stale(holder):
                        raise RunFolderBusy(
                            f"--output_dir {self.path.parent} is in use by another training run (pid {holder['pid']} on "
                            f"{holder.get('host')}, since {holder.get('since')}): wait for it to end or choose another "
                            f"--output_dir; if that run is gone, delete {self.path}."
                        ) from None
                    # Stale: only one of several runs taking it over wins the rename; the others see it gone.
                    try:
                        os.replace(self.path, self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.tmp"))
                    except FileNotFoundError:
                        pass
                    self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.tmp").unlink(missing_ok=True)
            raise RunFolderBusy(f"--output_dir {self.path.parent}: could not take its lock {self.path}: rerun.")
        finally:
            staged.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and self._holder() == self.owner:
            # A folder that became unwritable keeps the lock, which is stale (taken over) once this process ends.
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
        self.held = False


def _free_name_beside(folder: Path, label: str) -> Path:
    """`<folder>.<label>-<UTC time>` beside `folder`, numbered if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = folder.with_name(f"{folder.name}.{label}-{stamp}")
    count = 1
    while aside.exists():
        count += 1
        aside = folder.with_name(f"{folder.name}.{label}-{stamp}-{count}")
    return aside


def move_aside(output_dir: Path, lock: RunLock) -> Path | None:
    """--overwrite_output_dir: the whole earlier run goes, in one rename, to `<name>.replaced-<UTC time>` beside the
    folder (nothing is deleted); the lock is taken again in the emptied folder. Returns where it went."""
    if not earlier_output(output_dir):
        return None
    output_dir = output_dir.resolve()
    aside = _free_name_beside(output_dir, "replaced")
    try:
        os.rename(output_dir, aside)
    except OSError as error:
        raise PermissionError(
            f"cannot move the earlier run in --output_dir {output_dir} aside ({error.strerror}): move or delete it "
            "yourself, or choose another --output_dir."
        ) from None
    output_dir.mkdir()
    lock.held = False
    lock.acquire()
    (aside / LOCK_NAME).unlink(missing_ok=True)
    return aside


def move_abandoned_future_aside(output_dir: Path, resumed: Path, later: list[Path]) -> Path:
    """Resuming from `resumed`, an earlier checkpoint than the run's latest, starts a branch: the `later` checkpoints
    (the abandoned future of the run) move into `<name>.abandoned-after-<checkpoint>-<UTC time>` beside the folder
    (nothing is deleted), or a later `--resume_from_checkpoint latest` would continue the abandoned run. Returns where
    they went."""
    output_dir = output_dir.resolve()
    aside = _free_name_beside(output_dir, f"abandoned-after-{resumed.name}")
    try:
        aside.mkdir()
        for checkpoint in later:
            os.rename(checkpoint, aside / checkpoint.name)
    except OSError as error:
        names = ", ".join(checkpoint.name for checkpoint in later)
        raise PermissionError(
            f"cannot move {names}, the run's future after {resumed.name}, aside ({error.strerror}): move or delete them "
            "yourself, or resume from the latest checkpoint (--resume_from_checkpoint latest)."
        ) from None
    return aside
