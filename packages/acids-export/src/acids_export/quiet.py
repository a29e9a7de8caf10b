"""Keep the exporters' own printing off our streams, and their errors to one line.

torch's TorchScript-based ONNX exporter prints the whole traced graph ("Torch IR graph at exception")
from C++ to file descriptor 1 when a symbolic fails: on a command whose stdout carries records, that is
hundreds of lines of garbage in the pipe. :func:`captured` points fds 1 and 2 at a temporary file for the
duration of an export (C stdio flushed before and after, so nothing buffered escapes later) and hands the
text back for ``-v``. :func:`short_reason` cuts an exporter message to the operator and the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Captured:
    """What the wrapped code printed on fds 1 and 2 (filled in when the block exits)."""

    text: str = ""


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    with contextlib.suppress(Exception):  # C stdio (std::cout is synced with it)
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Redirect fds 1 and 2 into a temporary file around the block; restore them whatever happens.

    Python-level writes to ``sys.stdout``/``sys.stderr`` objects that are not the process's fds (pytest's
    capture, click's test runner) are untouched: only what reaches the real descriptors is captured.
    """
    out = Captured()
    _flush_all()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                except OSError:  # the descriptor is closed: nothing to protect
                    continue
                os.dup2(sink.fileno(), fd)
            yield out
        finally:
            _flush_all()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            out.text = sink.read().decode("utf-8", "replace")
    if out.text.strip():
        log.debug("the exporter printed:\n%s", out.text.rstrip())


_NOISE = (
    re.compile(r"\s*\[Caused by the value .*", re.S),  # the graph excerpt torch appends
    re.compile(r"\s*Please (feel free to )?(request support|report a bug|open an issue).*", re.S),
    re.compile(r"\s*\(Triggered internally at .*", re.S),
)


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """The operator and the reason of an exporter error, on one line of at most ``limit`` characters."""
    text = str(exc).strip() or type(exc).__name__
    for pattern in _NOISE:
        text = pattern.sub("", text)
    line = next((s.strip() for s in text.splitlines() if s.strip()), type(exc).__name__)
    line = re.sub(r"^(Unsupported|Error|RuntimeError):\s*", "", line)
    line = re.sub(r"^ONNX export of (operator \S+?),?\s", r"\1: ", line)
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line
