"""Click glue shared by every acids command: error → exit-code mapping, ``-v``/``-q``, records I/O.

Use :class:`AcidsGroup` / :class:`AcidsCommand` as the ``cls`` of click groups and commands. An
:class:`~acids_core.errors.AcidsError` raised anywhere below becomes one line on stderr
(``acids-data: error: <message>``) and its exit code; a consumer that closed the pipe ends the command
quietly with exit 141 (128 + SIGPIPE, what a shell reports for a killed writer, so ``set -o pipefail``
tells it apart from a crash); Ctrl-C gives 130. Anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from acids_core.errors import AcidsError
from acids_core.log import setup_logging

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush doesn't fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def report_error(message: str, prog: str | None = None) -> None:
    """Write ``prog: error: message`` as one line on stderr."""
    prog = prog or os.path.basename(sys.argv[0] or "acids")
    line = " ".join(str(message).split("\n"))
    try:
        click.echo(f"{prog}: error: {line}", err=True)
    except (OSError, ValueError):
        pass


class _ErrorMapping:
    """Mixin for click commands: turn AcidsError / EPIPE / Ctrl-C into exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except AcidsError as e:
            report_error(e.message, ctx.find_root().info_name)
            raise click.exceptions.Exit(int(e.code)) from None
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as e:
            if e.errno == errno.EPIPE:
                _silence_stdout()
                raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
            raise
        except KeyboardInterrupt:
            report_error("interrupted", ctx.find_root().info_name)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


class AcidsCommand(_ErrorMapping, click.Command):
    """A click command with the acids error mapping."""


class AcidsGroup(_ErrorMapping, click.Group):
    """A click group whose subcommands get the acids error mapping and ``-v``/``-q`` too.

    So ``tool -q verb`` and ``tool verb -q`` both work, whichever the user types.
    """

    command_class = AcidsCommand
    group_class = type  # subgroups are AcidsGroup as well

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name in ("verbose", "quiet") for p in cmd.params):
            cmd.params.extend(_verbosity_params())
        super().add_command(cmd, name)


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    meta = ctx.find_root().meta
    delta = value if param.name == "verbose" else -value
    meta["acids.verbosity"] = meta.get("acids.verbosity", 0) + delta
    setup_logging(meta["acids.verbosity"], prog=ctx.find_root().info_name)
    return value


def _verbosity_params() -> list[click.Option]:
    return [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            is_eager=True,
            callback=_set_verbosity,
            help="More on stderr (debug logs with timestamps).",
        ),
        click.Option(
            ["-q", "--quiet"],
            count=True,
            expose_value=False,
            is_eager=True,
            callback=_set_verbosity,
            help="Less on stderr (-q: warnings only, -qq: errors only).",
        ),
    ]


def verbosity_options(f: F) -> F:
    """Add ``-v/--verbose`` and ``-q/--quiet`` (repeatable) and set up stderr logging from them."""
    f = click.option(
        "-q",
        "--quiet",
        count=True,
        expose_value=False,
        is_eager=True,
        callback=_set_verbosity,
        help="Less on stderr (-q: warnings only, -qq: errors only).",
    )(f)
    f = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        is_eager=True,
        callback=_set_verbosity,
        help="More on stderr (debug logs with timestamps).",
    )(f)
    return f


def verbosity(ctx: click.Context | None = None) -> int:
    """The verbosity the user asked for (0 by default)."""
    ctx = ctx or click.get_current_context()
    return int(ctx.find_root().meta.get("acids.verbosity", 0))
