"""Running a command: bad input becomes one line on stderr and exit status 2 (tracebacks only with --debug)."""

from __future__ import annotations

import sys

# Errors that mean "the user asked for something we cannot do", as opposed to bugs.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, OSError)


def run_command(main, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except USER_ERRORS as error:
        if "--debug" in argv:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
