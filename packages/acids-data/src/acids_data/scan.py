"""Input discovery and the deterministic ``--shard i/N`` partition.

Inputs are files, folders (searched recursively for audio extensions), glob patterns, or ``audio`` records
read from stdin. Each source keeps a *key*: its path relative to the folder or glob root it was found under
(the file name for a file named directly). ``--shard i/N`` keeps a source iff ``crc32(key) % N == i``: no
coordinator, independent of listing order and of where the data is mounted on each machine of a cluster.
"""

from __future__ import annotations

import glob
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acids_core.errors import MissingInput, UsageError
from acids_data.audio import SUPPORTED_EXTENSIONS

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input file: its absolute path and its partition key."""

    path: Path
    key: str


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` → (i, N), checked; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard expects i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text}: need 0 <= i < N")
    return i, n


def in_shard(key: str, index: int, count: int) -> bool:
    """Whether the source with ``key`` belongs to shard ``index`` of ``count``."""
    return count == 1 or zlib.crc32(key.encode("utf-8")) % count == index


def _is_audio(p: Path) -> bool:
    return p.suffix.lower() in SUPPORTED_EXTENSIONS and not p.name.startswith(".")


def _walk(root: Path) -> list[Source]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if _is_audio(p):
                found.append(Source(p.resolve(), p.relative_to(root).as_posix()))
    return found


def discover(inputs: Iterable[str | os.PathLike[str]]) -> list[Source]:
    """Expand inputs into a sorted, de-duplicated list of sources.

    A file named directly is kept whatever its extension (so an unsupported one is reported, not ignored);
    folders and globs keep audio extensions only.

    Raises:
        MissingInput: a path that does not exist, or a glob that matches nothing (exit 66).
    """
    sources: list[Source] = []
    for item in inputs:
        text = os.fspath(item)
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MissingInput(f"{text}: the pattern matches no file")
            base = Path(text.split("*")[0].split("?")[0].split("[")[0])
            base = base if base.is_dir() else base.parent
            for m in matches:
                p = Path(m)
                if p.is_dir():
                    sources.extend(_walk(p))
                elif _is_audio(p):
                    sources.append(Source(p.resolve(), os.path.relpath(p, base)))
            continue
        p = Path(text)
        if not p.exists():
            raise MissingInput(f"{text}: no such file or directory")
        if p.is_dir():
            sources.extend(_walk(p))
        else:
            sources.append(Source(p.resolve(), p.name))
    seen: set[Path] = set()
    unique = []
    for s in sources:
        if s.path not in seen:
            seen.add(s.path)
            unique.append(s)
    return sorted(unique, key=lambda s: (s.key, str(s.path)))


def select_shard(sources: Sequence[Source], index: int, count: int) -> list[Source]:
    """The sources of shard ``index`` of ``count``."""
    return [s for s in sources if in_shard(s.key, index, count)]
