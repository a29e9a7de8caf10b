"""Atomic file writes: write to a temporary sibling, fsync, rename, fsync the directory.

A reader (or a run resumed after SIGKILL) therefore sees either the old file or the whole new one,
never a torn one. Temporary files are named ``.<name>.tmp-<pid>-<n>`` so that :func:`clean_temporaries`
can remove what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_counter = itertools.count()
TMP_MARK = ".tmp-"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """A unique temporary sibling of ``path`` (same directory, so the rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}{TMP_MARK}{os.getpid()}-{next(_counter)}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    if "w" not in mode and "x" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    f = open(tmp, mode.replace("x", "w"), **open_kwargs)  # closed below
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def commit_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """fsync an already written file and rename it into place atomically."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """True for a temporary file made by :func:`atomic_write` or :func:`temporary_path`."""
    name = Path(path).name
    return name.startswith(".") and TMP_MARK in name


def clean_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed writer left in ``directory`` (not recursive)."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if p.is_file() and is_temporary(p):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            removed.append(p)
    return removed
