"""Running a command: bad input becomes one line on stderr and exit status 2 (tracebacks only with --debug).

A training run stopped early (a signal, a non-finite loss) exits with its own status and says how to go on.
"""

from __future__ import annotations

import sys

from .training.stopping import TrainingStopped

# Errors that mean "the user asked for something we cannot do", as opposed to bugs.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, OSError)


def run_command(main, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except (*USER_ERRORS, TrainingStopped, KeyboardInterrupt) as error:
        if "--debug" in argv:
            raise
        if isinstance(error, TrainingStopped):
            print(f"stopped: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        if isinstance(error, KeyboardInterrupt):  # outside the training steps, where nothing is half-written
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
