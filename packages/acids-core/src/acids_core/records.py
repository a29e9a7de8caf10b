"""Pipe records: JSON Lines on stdout, one object per line, each with a ``kind`` and a ``version``.

Records carry paths and metadata, never samples (DESIGN.md §2). Writers flush after every record so a
consumer downstream of ``|`` starts at once; readers accept stdin or a path and turn a malformed line into
:class:`~acids_core.errors.DataError` (exit 65) naming the line.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from acids_core.errors import DataError, MissingInput

RECORD_VERSION = 1

# The kinds DESIGN.md §2 defines. Unknown kinds are allowed (schema changes are additive), but a producer
# should use one of these.
KNOWN_KINDS = frozenset(
    {"audio", "dataset", "shard", "checkpoint", "latent", "example", "artifact", "bundle", "deployment"}
)


def make_record(kind: str, /, **fields: Any) -> dict[str, Any]:
    """Build a record: ``{"kind": kind, "version": 1, **fields}``."""
    if not kind or not isinstance(kind, str):
        raise ValueError("a record needs a non-empty string kind")
    return {"kind": kind, "version": RECORD_VERSION, **fields}


def dumps(record: dict[str, Any]) -> str:
    """One record as one line of JSON (no trailing newline). NaN/Inf are refused: they are not JSON."""
    if not isinstance(record, dict) or "kind" not in record:
        raise ValueError("a record is a dict with a 'kind'")
    record.setdefault("version", RECORD_VERSION)
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item"):  # numpy scalars, 0-d tensors
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_record(record: dict[str, Any], stream: IO[str] | None = None) -> None:
    """Write one record to ``stream`` (stdout by default) and flush it.

    A consumer that went away raises :class:`BrokenPipeError`; :func:`acids_core.cli.run` ends the
    command quietly on it.
    """
    out = sys.stdout if stream is None else stream
    out.write(dumps(record) + "\n")
    out.flush()


def parse_record(line: str, where: str = "<stdin>", lineno: int | None = None) -> dict[str, Any]:
    """Parse one line into a record, or raise :class:`DataError` saying where and why."""
    at = f"{where}:{lineno}" if lineno is not None else where
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        snippet = line.strip()
        snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
        raise DataError(f"{at}: not a JSON record ({e.msg}): {snippet!r}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{at}: a record must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise DataError(f"{at}: record has no 'kind'")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{at}: {kind} record has no integer 'version'")
    if version > RECORD_VERSION:
        raise DataError(
            f"{at}: {kind} record version {version} is newer than this tool reads ({RECORD_VERSION}); "
            "upgrade acids-core"
        )
    return obj


def iter_records(lines: Iterable[str], where: str = "<stdin>") -> Iterator[dict[str, Any]]:
    """Parse records from an iterable of lines, skipping blank lines."""
    for n, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_record(line, where, n)


def stdin_is_piped() -> bool:
    """True when stdin is a pipe or a file (not a terminal, not closed)."""
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        return False
    try:
        return not stdin.isatty()
    except (ValueError, io.UnsupportedOperation):
        return False


def read_records(
    source: str | os.PathLike[str] | IO[str] | None = None,
    kind: str | Iterable[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield records from stdin (``None`` or ``"-"``), a JSONL file path, or an open text stream.

    Args:
        source: where to read; stdin when ``None`` or ``"-"``.
        kind: keep only records of this kind (or these kinds); others pass by unseen.

    Raises:
        DataError: a malformed line (exit 65). MissingInput: a path that does not exist (exit 66).
    """
    kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
    if source is None or source == "-":
        records = iter_records(sys.stdin, "<stdin>")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise MissingInput(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a file of records")
        return _read_path(path, kinds)
    else:
        records = iter_records(source, getattr(source, "name", "<stream>"))
    return (r for r in records if kinds is None or r["kind"] in kinds)


def _read_path(path: Path, kinds: set[str] | None) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for r in iter_records(f, str(path)):
            if kinds is None or r["kind"] in kinds:
                yield r


def last_record(source: str | os.PathLike[str] | IO[str] | None, kind: str) -> dict[str, Any]:
    """The last record of ``kind`` in ``source`` (aggregating stages take the newest), or DataError."""
    found = None
    for r in read_records(source, kind):
        found = r
    if found is None:
        where = "stdin" if source in (None, "-") else str(source)
        raise DataError(f"no '{kind}' record on {where}")
    return found
