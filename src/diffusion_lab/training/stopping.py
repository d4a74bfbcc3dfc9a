"""Stopping a run early but cleanly: on SIGINT/SIGTERM, and on a non-finite loss."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

RESUME_HINT = "rerun the same command with --resume_from_checkpoint latest"


class TrainingStopped(Exception):
    """The run stopped before its last step; the message says why and how to go on, `exit_code` is the exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class SamplingStopped(Exception):
    """A stop signal came while the run was drawing images; they are abandoned."""


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM (kill, a scheduler's time limit) only record that they came.

    The training loop looks at `received` after each step, writes a checkpoint and stops.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = 0
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

    def _record(self, signum, frame) -> None:
        if not self.received:
            print(f"\n{signal.Signals(signum).name} received: stopping after this step to write a checkpoint.", file=sys.stderr, flush=True)
        self.received = signum
