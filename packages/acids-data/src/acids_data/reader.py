"""Random access to a dataset's chunks with numpy only (no torch).

Each read is a ``pread`` of exactly the bytes it needs from the shard's .npy file, at an offset computed
from the .npy header: chunk ``i`` of a shard starts at ``header + i * row_bytes``. File descriptors are
opened lazily, per process, and kept in a bounded LRU (a memmap per array would hold one descriptor per
file for good, and a large dataset has thousands of files). The pickled state holds only paths and the
manifest, so a reader is safe to hand to forked or spawned DataLoader workers.

int16 audio becomes float32 in one pass (``np.multiply`` into a float32 output; no float64 temporary).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acids_core.errors import DataError, UsageError
from acids_data.store import AUDIO, SHARDS, dataset_root, read_manifest, read_shard_index

_SCALE = np.float32(1.0 / 32768.0)
_MAX_PIECES = 8  # crop reads: at most this many preads per array row, else read the row and slice


def _max_open_files() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - Windows
        return 64
    if soft == resource.RLIM_INFINITY:
        return 1024
    return int(max(8, min(1024, soft // 8)))


class _Array:
    """Where one .npy's rows lie: file, data offset, row shape and dtype."""

    __slots__ = ("dtype", "offset", "path", "row_bytes", "row_shape")

    def __init__(self, path: Path, n: int) -> None:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
        except FileNotFoundError:
            raise DataError(f"{path}: missing (the dataset is damaged)") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npy ({e})") from None
        if fortran or dtype.hasobject or not shape or shape[0] != n:
            raise DataError(f"{path}: shape {shape} does not match its index ({n} rows)")
        self.path = path
        self.row_shape = tuple(shape[1:])
        self.dtype = dtype
        self.row_bytes = dtype.itemsize * math.prod(self.row_shape)


class ShardReader:
    """O(1)-ish random access to the chunks of a dataset (bisect over cumulative shard counts).

    Args:
        root: a dataset directory, its manifest.json, or a ``dataset`` record.
        keys: the arrays to read: ``"audio"`` and/or feature keys (default: all).

    Raises:
        UsageError: a key the dataset does not have. DataError / MissingInput: see :func:`read_manifest`.
    """

    def __init__(self, root: str | os.PathLike[str] | Mapping[str, Any], keys: Sequence[str] | None = None):
        self._root = dataset_root(root)
        self._setup(read_manifest(self._root), keys)

    def _setup(self, manifest: dict[str, Any], keys: Sequence[str] | None) -> None:
        self._manifest = manifest
        available = [AUDIO, *manifest["feature_keys"]]
        keys = list(available if keys is None else keys)
        unknown = [k for k in keys if k not in available]
        if unknown or not keys:
            raise UsageError(f"{self._root}: no array {unknown or keys} (it has {', '.join(available)})")
        self._keys = keys
        self._shards = [(s["name"], int(s["n"]), dict(s["arrays"])) for s in manifest["shards"]]
        self._starts = [0]
        for _, n, _ in self._shards:
            self._starts.append(self._starts[-1] + n)
        self._len = self._starts.pop()
        self._fh = manifest.get("feature_hop")
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._arrays: dict[tuple[int, str], _Array] = {}
        self._indexes: dict[int, dict[str, Any]] = {}
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._max_fds = _max_open_files()
        self._lock = threading.Lock()
        self._paths: dict[str, str] | None = None

    # ---- pickling: paths and manifest only; descriptors are reopened in the new process

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self._root, "manifest": self._manifest, "keys": self._keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._root = state["root"]
        self._setup(state["manifest"], state["keys"])

    # ---- properties

    @property
    def root(self) -> Path:
        return self._root

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    @property
    def sample_rate(self) -> int:
        return int(self._manifest["sample_rate"])

    @property
    def channels(self) -> int:
        return int(self._manifest["channels"])

    @property
    def chunk(self) -> int:
        return int(self._manifest["chunk"])

    @property
    def feature_hop(self) -> int | None:
        return self._fh

    def __len__(self) -> int:
        return self._len

    # ---- reading

    def _locate(self, i: int) -> tuple[int, int]:
        i = operator.index(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"chunk {i} out of range ({self._len} chunks)")
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    def _array(self, s: int, key: str) -> _Array:
        a = self._arrays.get((s, key))
        if a is None:
            _, n, arrays = self._shards[s]
            a = self._arrays[(s, key)] = _Array(self._root / SHARDS / arrays[key], n)
        return a

    def _fd(self, path: Path) -> int:
        if self._pid != os.getpid():  # forked: drop the inherited copies (and a lock another thread held)
            for inherited in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(inherited)
            self._reset()
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                self._fds.move_to_end(path)
                return fd
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._fds[path] = fd
            while len(self._fds) > self._max_fds:
                os.close(self._fds.popitem(last=False)[1])
            return fd

    def _read_row(self, s: int, key: str, row: int, a: int, b: int) -> np.ndarray:
        """Row ``row`` of array ``key`` of shard ``s``, last axis sliced ``[a:b]``, in the stored dtype."""
        arr = self._array(s, key)
        fd = self._fd(arr.path)
        base = arr.offset + row * arr.row_bytes
        T = arr.row_shape[-1]
        lead = arr.row_shape[:-1]
        R = math.prod(lead)
        if (a, b) == (0, T):
            out = np.empty(arr.row_shape, arr.dtype)
            _pread_into(fd, out, base, arr.path)
            return out
        if R <= _MAX_PIECES:  # one pread per leading row (per channel for audio)
            out = np.empty((R, b - a), arr.dtype)
            item = arr.dtype.itemsize
            for r in range(R):
                _pread_into(fd, out[r], base + (r * T + a) * item, arr.path)
            return out.reshape(*lead, b - a)
        full = np.empty(arr.row_shape, arr.dtype)
        _pread_into(fd, full, base, arr.path)
        return full[..., a:b]

    def read(self, i: int, start: int = 0, length: int | None = None) -> dict[str, np.ndarray]:
        """Chunk ``i``, cropped to samples ``[start, start + length)``; features cropped to the same frames.

        Returns:
            ``{"audio": float32 (C, length) in [-1, 1), key: float32 (..., length // feature_hop)}``.

        Raises:
            IndexError: ``i`` out of range. ValueError: a crop outside the chunk, or not on frame boundaries
            (multiples of feature_hop) when features are read.
        """
        s, row = self._locate(i)
        L = self.chunk
        if length is None:
            length = L - start
        if start < 0 or length <= 0 or start + length > L:
            raise ValueError(f"crop [{start}, {start + length}) is outside the chunk [0, {L})")
        out: dict[str, np.ndarray] = {}
        for key in self._keys:
            if key == AUDIO:
                raw = self._read_row(s, key, row, start, start + length)
                audio = np.empty(raw.shape, np.float32)
                np.multiply(raw, _SCALE, out=audio)  # int16 -> float32 directly
                out[key] = audio
                continue
            fh = self._fh
            if start % fh or length % fh:
                raise ValueError(f"crop [{start}, {start + length}) is not on frame boundaries (hop {fh})")
            raw = self._read_row(s, key, row, start // fh, (start + length) // fh)
            out[key] = raw if raw.dtype == np.float32 and raw.flags.c_contiguous else raw.astype(np.float32)
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Chunk ``i``: ``{"audio": float32 (C, L), <feature>: float32 (..., F)}``."""
        return self.read(i)

    # ---- provenance

    def _index(self, s: int) -> dict[str, Any]:
        idx = self._indexes.get(s)
        if idx is None:
            idx = read_shard_index(self._root / SHARDS / f"{self._shards[s][0]}.json")
            idx["chunks"] = np.asarray(idx["chunks"], dtype=np.int64).reshape(-1, 3)
            self._indexes[s] = idx
        return idx

    def source(self, i: int) -> tuple[str, int, int]:
        """``(source path, chunk index in that file, start sample in that file)`` of chunk ``i``."""
        s, row = self._locate(i)
        idx = self._index(s)
        li, ci, start = (int(x) for x in idx["chunks"][row])
        if self._paths is None:
            self._paths = {}
            for e in self._manifest["files"]:
                if e.get("sha256") and e.get("status") in ("ok", "padded"):
                    self._paths.setdefault(e["sha256"], e["path"])
        sha = idx["files"][li]
        path = self._paths.get(sha) or (idx.get("paths") or [sha] * len(idx["files"]))[li]
        return path, ci, start

    def source_sha256(self, i: int) -> str:
        """The sha256 of the source file of chunk ``i``."""
        s, row = self._locate(i)
        idx = self._index(s)
        return idx["files"][int(idx["chunks"][row, 0])]

    def file_index(self) -> tuple[list[str], np.ndarray]:
        """``(shas, ids)``: the distinct source sha256s, and for each chunk the index of its source."""
        where: dict[str, int] = {}  # insertion-ordered: sha -> id
        ids = np.empty(self._len, np.int64)
        for s in range(len(self._shards)):
            idx = self._index(s)
            local = np.array([where.setdefault(sha, len(where)) for sha in idx["files"]], np.int64)
            start = self._starts[s]
            ids[start : start + len(idx["chunks"])] = local[idx["chunks"][:, 0]]
        return list(where), ids

    def close(self) -> None:
        """Close the open file descriptors (they reopen on the next read)."""
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            try:
                self.close()
            except Exception:  # at interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"ShardReader({str(self._root)!r}, {len(self)} chunks, keys={self._keys})"


def _pread_into(fd: int, out: np.ndarray, offset: int, path: Path) -> None:
    buf = memoryview(out).cast("B")
    n = len(buf)
    got = _preadv(fd, buf, offset)
    while 0 < got < n:  # short reads are legal; finish the job
        more = _preadv(fd, buf[got:], offset + got)
        if more <= 0:
            break
        got += more
    if got != n:
        raise DataError(f"{path}: truncated (wanted {n} bytes at offset {offset}, got {got})")


if hasattr(os, "preadv"):

    def _preadv(fd: int, buf: memoryview, offset: int) -> int:
        return os.preadv(fd, [buf], offset)

elif hasattr(os, "pread"):  # pragma: no cover - platforms without preadv

    def _preadv(fd: int, buf: memoryview, offset: int) -> int:
        data = os.pread(fd, len(buf), offset)
        buf[: len(data)] = data
        return len(data)

else:  # pragma: no cover - Windows: seek + read under a lock
    _seek_lock = threading.Lock()

    def _preadv(fd: int, buf: memoryview, offset: int) -> int:
        with _seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, len(buf))
        buf[: len(data)] = data
        return len(data)
