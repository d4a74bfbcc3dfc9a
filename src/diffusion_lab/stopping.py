"""Stopping a run early but cleanly: on SIGINT/SIGTERM, on a non-finite loss, and when the run folder can no longer
be written."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

RESUME_HINT = "rerun the same command with --resume_from_checkpoint latest"


class TrainingStopped(Exception):
    """The run stopped before its last step; the message says why and how to go on, `exit_code` is the exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class SamplingStopped(Exception):
    """A stop signal came while the run was drawing images; they are abandoned."""


class StepAbandoned(Exception):
    """A stop signal came during the forward or backward pass of a training step; the step is given up."""


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM (kill, a scheduler's time limit) only record that they came.

    The training loop looks at `received` after each step, writes a checkpoint and stops; with `abandoning_steps`,
    a signal during a step's forward or backward pass gives that step up at once instead.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = 0
        self.in_step = False
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            self._previous = {signum: signal.signal(signum, self._record) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @contextmanager
    def interrupting(self, model):
        """While active, a received signal makes the next call of `model` raise SamplingStopped, so that sampling
        (hundreds of model calls inside a pipeline) ends within one call of the signal."""

        def check(module, inputs):
            if self.received:
                raise SamplingStopped()

        handle = model.register_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def abandoning_steps(self, model):
        """While active, a signal received inside `step()` makes the next call of any of `model`'s modules, or the next
        gradient computed for one of its parameters, raise StepAbandoned.

        A launcher gives its processes seconds after a signal before it kills them (accelerate's 5 s), less than one
        step of a large model on a CPU: the step is given up within one layer of the signal, and the checkpoint of the
        step before is written at once. Neither hook runs in the optimizer update, so a step is never given up
        half-applied.
        """

        def check(*_):
            if self.received and self.in_step:
                raise StepAbandoned()

        handles = [module.register_forward_pre_hook(check) for module in model.modules()]
        handles += [parameter.register_hook(check) for parameter in model.parameters() if parameter.requires_grad]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def step(self):
        """One training step: the part of the loop that `abandoning_steps` may give up."""
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False

    def _record(self, signum, frame) -> None:
        if not self.received:
            print(f"\n{signal.Signals(signum).name} received: writing a checkpoint, then stopping.", file=sys.stderr, flush=True)
        self.received = signum


PR_SET_PDEATHSIG = 1  # linux/prctl.h
LAUNCHERS = (b"accelerate", b"torchrun", b"torch.distributed.run", b"torch.distributed.launch")


def stop_with_launcher() -> bool:
    """Under `accelerate launch` or torchrun, have the kernel send this process SIGTERM when its launcher dies.

    A launcher that dies at once (`kill -9 <launcher pid>`; `kill <launcher pid>` before accelerate 1.16, which
    passes SIGTERM on) would leave the training process running unattended; with this, it stops as for any SIGTERM,
    with a checkpoint. Only under a launcher: a run started with `nohup python train_ddpm.py` must outlive its shell.
    Linux only.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if not any(name in command for name in LAUNCHERS):
        return False
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
    return True


@contextmanager
def stop_cleanly_on_sigterm(what: str):
    """Inside, SIGTERM raises TrainingStopped like Ctrl-C raises KeyboardInterrupt, so that `finally` blocks remove
    what was half-written (e.g. a partly decoded image cache) instead of the process dying on the spot. The signal
    arrives as `Terminated` (a KeyboardInterrupt, not an Exception: a library's `except Exception` would swallow it,
    as tqdm's does while it starts its monitor thread, just as a decoding loop begins) and leaves the block as the
    one-line TrainingStopped."""
    try:
        with sigterm_as_interrupt():
            yield
    except Terminated as received:
        name, exit_code = interruption(received)
        raise TrainingStopped(f"{name} while {what}: nothing was saved; rerun the command.", exit_code) from None


class RunFolderWatch:
    """Tells whether the run folder was deleted, moved or replaced by another folder since the run started writing it.

    An open handle on the folder follows it wherever it is moved, and the kernel names its path (Linux:
    /proc/self/fd), so a stop can say where the run's checkpoints went.
    """

    def __init__(self, path: Path):
        self.path = path
        self._handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self._identity = self._identity_of(os.fstat(self._handle))

    @staticmethod
    def _identity_of(status: os.stat_result) -> tuple[int, int]:
        return status.st_dev, status.st_ino

    def changed(self) -> bool:
        """One stat of the path: host-only, cheap enough for every step."""
        try:
            return self._identity_of(os.stat(self.path)) != self._identity
        except FileNotFoundError:
            return True

    def stop(self, step: int, last_checkpoint) -> TrainingStopped:
        """The stop once `changed()`: what happened and the last intact checkpoint (`last_checkpoint(folder)`, None if
        none) where the folder is now."""
        replaced = " and replaced by another folder" if self.path.exists() else ""
        try:
            now = os.readlink(f"/proc/self/fd/{self._handle}")
        except OSError:
            now = None
        if now is None or now.endswith(" (deleted)"):
            what = f"was deleted{replaced}" if now else f"was deleted or moved{replaced}"
            return TrainingStopped(f"the run folder {self.path} {what} during training (noticed after step {step}): no checkpoint "
                                   "of this run is left to resume; rerun the command to start afresh.", exit_code=1)
        checkpoint = last_checkpoint(Path(now))
        then = (f"its last intact checkpoint is {Path(now) / checkpoint}: move the folder back, then {RESUME_HINT}" if checkpoint
                else "it holds no checkpoint to resume; rerun the command to start afresh")
        return TrainingStopped(f"the run folder {self.path} was moved to {now}{replaced} during training (noticed after step {step}); "
                               f"{then}.", exit_code=1)

    def close(self) -> None:
        os.close(self._handle)


@contextmanager
def quiet_tensorboard_writer():
    """Inside, an error of TensorBoard's writer thread (its folder deleted) prints no traceback: TensorBoard raises it
    again in the main thread at the next log, where the run stops with one line."""
    previous = threading.excepthook

    def hook(args):
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, as Ctrl-C raises KeyboardInterrupt."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_as_interrupt():
    """Inside, SIGTERM stops a command as Ctrl-C does (`Terminated` is a KeyboardInterrupt), so that what a command
    keeps on Ctrl-C (sample's partial/) it keeps on SIGTERM (kill, a scheduler's time limit) too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption(stop: KeyboardInterrupt) -> tuple[str, int]:
    """How to name a Ctrl-C or `Terminated` in a message, and the exit status it gives (128 + the signal)."""
    signum = getattr(stop, "signum", signal.SIGINT)
    return ("interrupted" if signum == signal.SIGINT else f"{signal.Signals(signum).name} received"), 128 + signum


# OS errors that mean the run folder can no longer be written: permissions, a read-only mount, a full disk or quota,
# a file size limit.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def stop_if_unwritable(output_dir: Path, last_checkpoint, watch: RunFolderWatch | None = None, step=lambda: 0):
    """Inside, an OS error writing the run folder (it became read-only, or the disk filled up) stops the run with a
    line naming the path, the last checkpoint (`last_checkpoint(folder)`, None if none) that is intact, and what to do; one
    because the folder was deleted or moved (`watch`) stops it with `watch`'s line (`step()`: the last step done).
    Errors our writers already explain (checkpoints and pipelines, WriteError) carry no errno and pass through."""
    try:
        yield
    except OSError as error:
        if watch is not None and watch.changed():
            raise watch.stop(step(), last_checkpoint) from None
        if error.errno not in UNWRITABLE:
            raise
        checkpoint = last_checkpoint(output_dir)
        remedy = f"make {output_dir} writable (or free disk space), then"
        if checkpoint is None:
            then = f"no checkpoint was written yet, so there is nothing to resume: {remedy} rerun the same command with --overwrite_output_dir."
        else:
            then = f"the last checkpoint ({checkpoint}) is intact: {remedy} {RESUME_HINT}."
        raise TrainingStopped(f"cannot write {error.filename or output_dir} ({error.strerror}); {then}", exit_code=1) from None
