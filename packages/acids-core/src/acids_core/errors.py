"""Exit codes (DESIGN.md §2) and the exceptions that carry them.

A command raises one of these for a *user-facing* failure; :func:`acids_core.cli.run` turns it into one
line on stderr and the matching exit code. Anything else is a bug (exit 1, with a traceback).
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Process exit codes shared by every acids command (sysexits.h values where one exists)."""

    OK = 0
    BUG = 1  # a crash: please report it
    USAGE = 2  # bad flags or config (click's own code)
    DATA = 65  # bad record or bad input data (also: finished, but some inputs were skipped)
    NO_INPUT = 66  # an input file or directory does not exist
    UNAVAILABLE = 69  # a missing optional dependency or hardware (TensorRT, CUDA, a board)
    TEMPFAIL = 75  # temporary failure: try again (SSH timeout, ...)


class AcidsError(Exception):
    """A failure to report as one clear line, with an exit code. Never a traceback."""

    code: Exit = Exit.BUG

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(AcidsError):
    """Bad flags, config keys or values (exit 2)."""

    code = Exit.USAGE


class DataError(AcidsError):
    """A malformed record or unusable input data (exit 65)."""

    code = Exit.DATA


class MissingInput(AcidsError):
    """An input path that does not exist (exit 66)."""

    code = Exit.NO_INPUT


class MissingDependency(AcidsError):
    """An optional dependency or piece of hardware that is not there (exit 69)."""

    code = Exit.UNAVAILABLE


class TemporaryFailure(AcidsError):
    """Something that may work if retried (exit 75)."""

    code = Exit.TEMPFAIL
