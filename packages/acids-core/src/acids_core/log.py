"""Logging and progress on stderr (stdout is for records only).

``setup_logging`` is called once, by the command group, from ``-v``/``-q``. :class:`Progress` draws a bar
when stderr is a terminal and writes a log line every few seconds otherwise (CI logs, ``2> file``), so
long work is visible in both places without flooding either.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any

ROOT_LOGGER = "acids"


class _Formatter(logging.Formatter):
    """``acids-data: message`` at INFO, level names above it, timestamps and module with -v."""

    def __init__(self, prog: str, verbose: bool) -> None:
        super().__init__()
        self.prog = prog
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and self.verbose:
            msg += "\n" + self.formatException(record.exc_info)
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        if self.verbose:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            return f"{stamp} {self.prog} [{record.name}] {level}{msg}"
        return f"{self.prog}: {level}{msg}"


def verbosity_to_level(verbosity: int) -> int:
    """0 → INFO, 1+ → DEBUG, -1 → WARNING, -2 or less → ERROR."""
    if verbosity >= 1:
        return logging.DEBUG
    if verbosity == 0:
        return logging.INFO
    if verbosity == -1:
        return logging.WARNING
    return logging.ERROR


#: loggers that follow -v/-q: the acids packages (``logging.getLogger(__name__)`` in any of them works)
PACKAGE_LOGGERS = (
    ROOT_LOGGER,
    "acids_core",
    "acids_data",
    "acids_rave",
    "acids_ddsp",
    "acids_flowsynth",
    "acids_export",
    "acids_deploy",
)


def setup_logging(verbosity: int = 0, prog: str | None = None, stream: IO[str] | None = None) -> None:
    """Send logs and warnings to stderr: the acids packages at the level ``verbosity`` asks for, other
    libraries at WARNING (ERROR with -qq).

    Idempotent: a second call replaces the handler, so tests and nested commands don't duplicate lines.
    """
    prog = prog or os.path.basename(sys.argv[0] or "acids")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_acids", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Formatter(prog, verbosity >= 1))
    handler._acids = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity >= -1 else logging.ERROR)
    level = verbosity_to_level(verbosity)
    for name in PACKAGE_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``acids`` root (``get_logger("data.preprocess")`` → ``acids.data.preprocess``)."""
    return logging.getLogger(f"{ROOT_LOGGER}.{name}" if not name.startswith(ROOT_LOGGER) else name)


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Progress of long work, on stderr.

    Args:
        total: the number of units, or ``None`` when unknown.
        desc: what is being done ("preprocess", "train").
        unit: the unit's name, for the rate ("files", "steps").
        mode: ``"bar"`` (redrawn line), ``"lines"`` (a log line every ``interval`` s) or ``"off"``;
            default: ``bar`` when the stream is a terminal, else ``lines``; env ``ACIDS_PROGRESS`` overrides.
        interval: seconds between lines in ``lines`` mode.
        initial: units already done before this run (a resumed training's step): counted in the
            position, not in the rate or the time left.

    Use as a context manager, call :meth:`update` with the units done and any scalars to show
    (``loss=0.12``).
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        *,
        mode: str | None = None,
        interval: float = 10.0,
        stream: IO[str] | None = None,
        logger: logging.Logger | None = None,
        initial: int = 0,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.logger = logger or get_logger("progress")
        self.n = self.initial = initial
        self.info: dict[str, Any] = {}
        self._start = time.monotonic()
        self._last_emit = self._start
        self._closed = False
        self.mode = mode or os.environ.get("ACIDS_PROGRESS") or self._default_mode()
        if self.mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be bar, lines or off, not {self.mode!r}")
        if self.mode == "bar" and not self.logger.isEnabledFor(logging.INFO):
            self.mode = "off"  # -q silences bars too

    def _default_mode(self) -> str:
        try:
            return "bar" if self.stream.isatty() else "lines"
        except (AttributeError, ValueError):
            return "lines"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    @property
    def rate(self) -> float:
        return (self.n - self.initial) / self.elapsed if self.elapsed > 0 else 0.0

    def text(self) -> str:
        """The progress as one line of text (without the bar)."""
        parts = [f"{self.desc}:" if self.desc else ""]
        if self.total:
            parts.append(f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n} {self.unit}")
        rate = self.rate
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_fmt_duration(self.elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_fmt_duration((self.total - self.n) / rate)}")
        parts += [f"{k}={_fmt_value(v)}" for k, v in self.info.items()]
        return " ".join(p for p in parts if p)

    def update(self, n: int = 1, **info: Any) -> None:
        """Count ``n`` more units done and remember ``info`` scalars for display."""
        self.n += n
        self.info.update(info)
        now = time.monotonic()
        if self.mode == "bar":
            if now - self._last_emit >= 0.1 or (self.total and self.n >= self.total):
                self._draw()
                self._last_emit = now
        elif self.mode == "lines" and now - self._last_emit >= self.interval:
            self.logger.info(self.text())
            self._last_emit = now

    def _draw(self) -> None:
        width = 24
        bar = ""
        if self.total:
            filled = int(width * min(1.0, self.n / self.total))
            bar = "[" + "#" * filled + "." * (width - filled) + "] "
        try:
            self.stream.write("\r\x1b[2K" + bar + self.text())
            self.stream.flush()
        except (OSError, ValueError):
            self.mode = "off"

    def close(self) -> None:
        """Finish the bar (newline) or write the final line."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._draw()
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        elif self.mode == "lines" and self.n:
            self.logger.info(self.text())
