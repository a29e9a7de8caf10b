"""Random access to a dataset's chunks with numpy only (no torch).

Each shard array is memory-mapped at the data offset of its .npy header (chunk ``i`` of a shard starts at
``header + i * row_bytes``), and a read slices exactly the rows and samples it needs. Maps are opened
lazily, per process, and kept in a bounded LRU: each map holds a file descriptor, and a large dataset has
thousands of files. The pickled state holds only paths and the manifest, so a reader is safe to hand to
forked or spawned DataLoader workers.

int16 audio becomes float32 with one conversion and one in-place scale (no float64 temporary). Measured
against a plain ``np.load(mmap_mode="r")`` of the same shards: tools/bench/reader_bench.py.
"""

from __future__ import annotations

import bisect
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
        available = [AUDIO, *manifest["feature_keys"], *manifest.get("chunk_keys", [])]
        self._chunk_keys = frozenset(manifest.get("chunk_keys", []))
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
        self._maps: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._max_maps = _max_open_files()
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

    @property
    def chunk_keys(self) -> list[str]:
        """The dataset's per-chunk arrays (no frame axis; empty for datasets that have none)."""
        return list(self._manifest.get("chunk_keys", []))

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

    def _map(self, s: int, key: str) -> tuple[_Array, np.ndarray]:
        """The memory map of array ``key`` of shard ``s``: (n, *row_shape), from the bounded LRU."""
        arr = self._array(s, key)
        if self._pid != os.getpid():  # forked: start with our own maps (and a lock no other thread holds)
            self._reset()
            arr = self._array(s, key)
        with self._lock:
            m = self._maps.get(arr.path)
            if m is not None:
                self._maps.move_to_end(arr.path)
                return arr, m
            n = self._shards[s][1]
            try:
                m = np.memmap(
                    arr.path, dtype=arr.dtype, mode="r", offset=arr.offset, shape=(n, *arr.row_shape)
                )
            except (OSError, ValueError) as e:
                raise DataError(f"{arr.path}: truncated or unreadable ({e})") from None
            self._maps[arr.path] = m
            while len(self._maps) > self._max_maps:
                self._maps.popitem(last=False)
            return arr, m

    def _read_row(self, s: int, key: str, row: int, a: int, b: int) -> np.ndarray:
        """Row ``row`` of array ``key`` of shard ``s``, last axis sliced ``[a:b]`` (a view of the map)."""
        _, m = self._map(s, key)
        return m[row, ..., a:b]

    def read(self, i: int, start: int = 0, length: int | None = None) -> dict[str, np.ndarray]:
        """Chunk ``i``, cropped to samples ``[start, start + length)``; features cropped to the same frames.

        Returns:
            ``{"audio": float32 (C, length) in [-1, 1), key: float32 (..., length // feature_hop)}``, and
            for a chunk key (no frame axis) its whole row ``(...)``, whatever the crop, in its stored dtype.

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
                audio = self._read_row(s, key, row, start, start + length).astype(np.float32)
                audio *= _SCALE  # int16 -> float32: one conversion, one in-place scale
                out[key] = audio
                continue
            if key in self._chunk_keys:
                _, m = self._map(s, key)
                out[key] = np.array(m[row])  # a copy: the caller may write into it
                continue
            fh = self._fh
            whole = start == 0 and length == L  # a whole chunk has L // fh frames, whatever L % fh
            if not whole and (start % fh or length % fh):
                raise ValueError(f"crop [{start}, {start + length}) is not on frame boundaries (hop {fh})")
            raw = self._read_row(s, key, row, start // fh, L // fh if whole else (start + length) // fh)
            out[key] = np.array(raw, dtype=np.float32)  # a copy: the caller may write into it
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Chunk ``i``: ``{"audio": float32 (C, L), <feature>: float32 (..., F), <chunk key>: (...)}``."""
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
        """Drop the open maps (they reopen on the next read)."""
        with self._lock:
            self._maps.clear()

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
