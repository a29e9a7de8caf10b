"""The on-disk dataset (format version 1): writer with crash-safe commits and resume, manifest, validation.

Layout::

    DATASET/
      manifest.json              the dataset (rewritten atomically after every committed shard and at the end)
      shards/<name>.audio.npy    int16 (n, C, L): n chunks, C channels, L = chunk samples; standard .npy
      shards/<name>.<key>.npy    one per feature, same n and chunk order, F = L // feature_hop frames:
                                 loudness/f0/f0_confidence float32 (n, F), mel float16 (n, n_mels, F);
                                 other keys keep the caller's dtype (float64 is stored as float32)
      shards/<name>.<key>.npy    one per chunk array (``chunk_keys``): (n, ...) with no frame axis, e.g. a
                                 parameter vector (n, P) per chunk; same dtype rule as the features
      shards/<name>.json         the shard's index and COMMIT MARKER, written last, atomically:
                                 {"name", "n", "arrays": {key: filename}, "sha256": {key: hex of the file},
                                  "files": [source sha256, ...], "paths": [source path, ...],
                                  "chunks": [[local_file_idx, chunk_index_in_file, start_sample], ...]}
      journal.jsonl              only while a run is open or after a kill: file-table entries (mostly skipped
                                 files) not yet in manifest.json, folded into it by the next manifest write.
                                 A finished dataset has none.
      .writer.lock               flock'ed by the one ShardWriter allowed per directory

Shard names are ``part-{part:03d}-{k:05d}``: ``part`` is the ``--shard i/N`` index (0 for a single run) and
``k`` counts up. All arrays are little-endian and C-ordered; any .npy reader (``np.load(mmap_mode="r")``)
reads them. Shard files are immutable once their .json exists.

manifest.json keys: ``format`` ("acids-dataset"), ``format_version`` (1), ``created_by``, ``sample_rate``,
``channels``, ``chunk``, ``hop`` (chunk hop in samples), ``dtype`` ("int16"), ``feature_hop`` (or null),
``feature_keys`` (feature array keys, in order), ``chunk_keys`` (per-chunk array keys without a frame
axis, in order; absent or empty in datasets written before it existed, which read as ``[]``),
``features`` (the caller's description, opaque), ``config`` (the caller's preprocessing config, opaque),
``shards`` ([{"name", "n", "arrays"}] in reading order), ``files`` ([{"path", "sha256", "status":
"ok"|"padded"|"skipped", "reason", "chunks", "duration", "sample_rate", "channels", ...}]), ``totals``
({"chunks", "seconds" (sum of the durations of ok/padded files), "files_ok" (ok + padded),
"files_padded", "files_skipped"}), ``complete`` (true once a run ended normally), and for merged
datasets ``parts`` (the datasets it was merged from).

Commit protocol (one shard): each array goes to a temporary sibling (``.<name>.tmp-<pid>-<n>``), is
fsynced and renamed; then the shard .json is written atomically (the commit marker); then manifest.json
is rewritten atomically. A writer that opens a directory removes temporaries and any .npy without a
committed .json, and rebuilds its state from the committed .json files (the truth; the manifest may lag
by one shard). So a run killed at any point and re-run with the same inputs ends with exactly the chunks
of a clean run.

Resume contract (what the orchestrator does per source file)::

    if w.file_status(sha) is not None:      # done (ok / padded / skipped): nothing to do
        continue
    done = w.done_chunks(sha)               # chunks 0..done-1 are committed
    w.add_chunks(sha, path, audio[done:], feats[done:], done, starts[done:])   # may take several calls
    w.finish_file(entry)                    # or w.skip_file(path, sha, reason)

``add_chunks`` is idempotent on a prefix: chunks whose index is below the next expected index of that
source are dropped, so passing every chunk again (``first_chunk_index=0``) is also correct; a gap raises.
Resuming (and merging) requires equal sample_rate, channels, chunk, hop, feature_hop, feature keys and chunk
keys (as sets), features and config, except the top-level config keys in :data:`OPERATIONAL_CONFIG_KEYS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acids_core.atomic import atomic_write_json, clean_temporaries, commit_file, is_temporary, temporary_path
from acids_core.errors import DataError, MissingInput, UsageError

try:  # POSIX only; elsewhere the single-writer rule is not enforced
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = "acids-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
JOURNAL = "journal.jsonl"
LOCK = ".writer.lock"
AUDIO = "audio"
AUDIO_DTYPE = np.dtype("<i2")
FEATURE_DTYPES: dict[str, np.dtype] = {
    "loudness": np.dtype("<f4"),
    "f0": np.dtype("<f4"),
    "f0_confidence": np.dtype("<f4"),
    "mel": np.dtype("<f2"),
}
STATUSES = ("ok", "padded", "skipped")
# Top-level config keys that do not change the data: they may differ between a run and its resume, and
# between the parts of a merge. Every other key of ``config`` must be equal.
OPERATIONAL_CONFIG_KEYS = frozenset(
    "workers jobs num_workers shard part shard_bytes out output out_dir inputs input verbose quiet progress "
    "log_level strict max_errors force resume".split()
)
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SHARD_RE = re.compile(r"^part-(\d{3,})-(\d{5,})$")
_FLAGS = {
    "sample_rate": "--sample-rate",
    "channels": "--channels",
    "chunk": "--chunk",
    "hop": "--hop",
    "feature_hop": "--feature-hop",
    "feature_keys": "features",
    "chunk_keys": "chunk arrays",
    "features": "feature settings",
}


# --------------------------------------------------------------------------------------------- reading


def dataset_root(arg: str | os.PathLike[str] | Mapping[str, Any]) -> Path:
    """The directory of a dataset given as a directory, its manifest.json, or a ``dataset`` record.

    Raises:
        DataError: a record of another kind, or without a path.
    """
    if isinstance(arg, Mapping):
        if arg.get("kind") != "dataset":
            raise DataError(f"expected a 'dataset' record, got kind {arg.get('kind')!r}")
        if not isinstance(arg.get("path"), str):
            raise DataError("the dataset record has no 'path'")
        arg = arg["path"]
    p = Path(arg).expanduser()
    if p.name == MANIFEST and not p.is_dir():
        return p.parent
    if p.is_file():
        raise DataError(f"{p}: expected a dataset directory or its {MANIFEST}")
    return p


def dataset_record(root: str | os.PathLike[str], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``dataset`` pipe record of the dataset at ``root`` (what preprocess, merge and renderers emit)."""
    from acids_core.records import make_record

    out = Path(root)
    totals = manifest.get("totals", {})
    return make_record(
        "dataset",
        path=str(out.resolve()),
        manifest=str((out / MANIFEST).resolve()),
        sample_rate=manifest.get("sample_rate"),
        channels=manifest.get("channels"),
        chunk=manifest.get("chunk"),
        hop=manifest.get("hop"),
        feature_hop=manifest.get("feature_hop"),
        features=sorted((manifest.get("features") or {}).keys()),
        chunks=totals.get("chunks"),
        seconds=totals.get("seconds"),
        files_ok=totals.get("files_ok"),
        files_skipped=totals.get("files_skipped"),
        complete=manifest.get("complete", False),
    )


def read_manifest(root: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Load and check a dataset's manifest.json.

    Raises:
        MissingInput: the dataset directory does not exist (exit 66).
        DataError: no manifest, unreadable or not JSON, another format, or a newer format_version (exit 65).
    """
    d = dataset_root(root)
    path = d / MANIFEST
    if not path.is_file():
        if not d.exists():
            raise MissingInput(f"{d}: no such dataset directory")
        raise DataError(f"{d} is not an acids dataset: it has no {MANIFEST} (make one with acids-preprocess)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise DataError(f"{path}: not an {FORMAT} manifest (format: {got!r})")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {version} is newer than this acids-data reads ({FORMAT_VERSION}); "
            "upgrade acids-data"
        )
    for key in ("sample_rate", "channels", "chunk", "shards", "files"):
        if key not in m:
            raise DataError(f"{path}: manifest has no {key!r}")
    m.setdefault("feature_keys", _feature_keys_of(m))
    m.setdefault("chunk_keys", [])
    if not isinstance(m["chunk_keys"], list) or not all(isinstance(k, str) for k in m["chunk_keys"]):
        raise DataError(f"{path}: bad chunk_keys {m['chunk_keys']!r}")
    return m


def _feature_keys_of(m: Mapping[str, Any]) -> list[str]:
    if m.get("feature_keys") is not None:
        return list(m["feature_keys"])
    chunk_keys = set(m.get("chunk_keys") or ())
    for s in m.get("shards", ()):
        return [k for k in s.get("arrays", {}) if k != AUDIO and k not in chunk_keys]
    return []


def read_shard_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one shard's .json (its index and commit marker); DataError if unreadable or inconsistent."""
    p = Path(path)
    try:
        idx = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: shard index missing (the dataset is damaged)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{p}: unreadable shard index ({e})") from None
    try:
        n = int(idx["n"])
        ok = (
            isinstance(idx["arrays"], dict)
            and AUDIO in idx["arrays"]
            and len(idx["chunks"]) == n
            and all(0 <= c[0] < len(idx["files"]) for c in idx["chunks"])
        )
    except (KeyError, TypeError, IndexError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{p}: malformed shard index")
    return idx


def settings_of(m: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that must agree between a run and its resume, and between merged parts."""
    return {
        "sample_rate": m.get("sample_rate"),
        "channels": m.get("channels"),
        "chunk": m.get("chunk"),
        "hop": m.get("hop"),
        "feature_hop": m.get("feature_hop"),
        "feature_keys": sorted(_feature_keys_of(m)),
        "chunk_keys": sorted(m.get("chunk_keys") or []),
        "features": _plain(m.get("features") or {}),
        "config": _plain(m.get("config") or {}),
    }


def settings_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], other: str = "this run:"
) -> list[str]:
    """Differences between two :func:`settings_of` dicts, as ``"--sample-rate 48000 (this run: 16000)"``.

    Config keys in :data:`OPERATIONAL_CONFIG_KEYS` are ignored.
    """
    diffs, differ = [], set()
    for key, flag in _FLAGS.items():
        a, b = _plain(old.get(key)), _plain(new.get(key))
        if key in ("feature_keys", "chunk_keys"):
            a, b = sorted(a or []), sorted(b or [])
        if a != b:
            differ.add(key)
            if key in ("feature_keys", "chunk_keys"):
                what = "features" if key == "feature_keys" else "chunk arrays"
                diffs.append(f"{what} {','.join(a) or '(none)'} ({other} {','.join(b) or '(none)'})")
            else:
                diffs.append(f"{flag} {_show(a)} ({other} {_show(b)})")
    ca, cb = old.get("config") or {}, new.get("config") or {}
    for key in sorted((set(ca) | set(cb)) - OPERATIONAL_CONFIG_KEYS - differ):
        a, b = _plain(ca.get(key, "<unset>")), _plain(cb.get(key, "<unset>"))
        if a != b:
            diffs.append(f"config {key}={_show(a)} ({other} {_show(b)})")
    return diffs


def _show(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else v


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, numpy scalars plain numbers; NaN/Inf refused."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False, default=_jsonable))
    except ValueError as e:
        raise ValueError(f"not representable in JSON: {e}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def feature_dtype(key: str, dtype: np.dtype) -> np.dtype:
    """The stored dtype of a feature array (known keys are fixed; float64 is stored as float32)."""
    if key in FEATURE_DTYPES:
        return FEATURE_DTYPES[key]
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return np.dtype("<f4")
    return dtype if dtype.byteorder == "|" else dtype.newbyteorder("<")


def build_manifest(
    settings: Mapping[str, Any],
    *,
    created_by: str,
    shards: Sequence[Mapping[str, Any]],
    files: Sequence[Mapping[str, Any]],
    complete: bool,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest.json dict (key order as documented above)."""
    ok = [f for f in files if f.get("status") in ("ok", "padded")]
    m = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": created_by,
        "sample_rate": settings["sample_rate"],
        "channels": settings["channels"],
        "chunk": settings["chunk"],
        "hop": settings["hop"],
        "dtype": "int16",
        "feature_hop": settings["feature_hop"],
        "feature_keys": list(settings["feature_keys"]),
        "chunk_keys": list(settings.get("chunk_keys") or []),
        "features": settings["features"],
        "config": settings["config"],
        "shards": [{"name": s["name"], "n": int(s["n"]), "arrays": dict(s["arrays"])} for s in shards],
        "files": list(files),
        "totals": {
            "chunks": sum(int(s["n"]) for s in shards),
            "seconds": round(sum(float(f.get("duration") or 0.0) for f in ok), 6),
            "files_ok": len(ok),
            "files_padded": sum(f.get("status") == "padded" for f in files),
            "files_skipped": sum(f.get("status") == "skipped" for f in files),
        },
        "complete": bool(complete),
    }
    if extra:
        m.update(extra)
    return m


# --------------------------------------------------------------------------------------------- writing


class _HashingFile:
    """A write-only file wrapper that hashes what goes through it."""

    def __init__(self, f: Any, h: Any) -> None:
        self.f, self.h = f, h

    def write(self, b: Any) -> int:
        self.h.update(b)
        return self.f.write(b)


def write_npy(path: Path, pieces: Sequence[np.ndarray], dtype: np.dtype, row_shape: tuple[int, ...]) -> str:
    """Write the concatenation of ``pieces`` (each ``(m, *row_shape)``) as one .npy, crash-safely.

    The pieces are streamed (no concatenated copy). Returns the sha256 of the file.
    """
    n = sum(len(p) for p in pieces)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n, *row_shape)}
    tmp = temporary_path(path)
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            w = _HashingFile(f, h)
            np.lib.format.write_array_header_1_0(w, header)
            for p in pieces:
                if len(p):
                    w.write(memoryview(np.ascontiguousarray(p, dtype=dtype)).cast("B"))
        commit_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return h.hexdigest()


def write_shard(
    shards_dir: Path,
    name: str,
    arrays: Mapping[str, tuple[Sequence[np.ndarray], np.dtype, tuple[int, ...]]],
    files: Sequence[str],
    paths: Sequence[str],
    chunks: Sequence[Sequence[int]],
) -> dict[str, Any]:
    """Commit one shard: arrays (temporary, fsync, rename), then its .json marker. Returns the index."""
    n = len(chunks)
    filenames, digests = {}, {}
    written = []
    try:
        for key, (pieces, dtype, row_shape) in arrays.items():
            fname = f"{name}.{key}.npy"
            digests[key] = write_npy(shards_dir / fname, pieces, dtype, row_shape)
            written.append(shards_dir / fname)
            filenames[key] = fname
    except BaseException:
        for p in written:  # no marker yet: these are orphans; a reopened writer would remove them too
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    index = {
        "name": name,
        "n": n,
        "arrays": filenames,
        "sha256": digests,
        "files": list(files),
        "paths": list(paths),
        "chunks": [[int(a), int(b), int(c)] for a, b, c in chunks],
    }
    atomic_write_json(shards_dir / f"{name}.json", index, indent=None)
    return index


def _entry(path: str, sha: str | None, status: str, reason: str | None, chunks: int, **info: Any) -> dict:
    e = {
        "path": str(path),
        "sha256": sha,
        "status": status,
        "reason": reason,
        "chunks": int(chunks),
        "duration": info.pop("duration", None),
        "sample_rate": info.pop("sample_rate", None),
        "channels": info.pop("channels", None),
    }
    e.update(info)
    return _plain(e)


class ShardWriter:
    """Writes (or resumes writing) a dataset directory; the one writer of that directory.

    Args:
        root: the dataset directory (created if missing).
        sample_rate, channels, chunk, hop: the audio layout; ``chunk`` samples per chunk, ``hop`` between
            chunk starts.
        feature_hop: samples per feature frame (None without features).
        feature_keys: feature array names, e.g. ``("loudness", "f0", "f0_confidence")``; each is
            ``(n, ..., F)`` per :meth:`add_chunks` call, F = chunk // feature_hop frames.
        chunk_keys: per-chunk array names: ``(n, ...)`` with no frame axis (a vector, a matrix or a
            scalar per chunk, e.g. a synth's parameter vector). Not cropped by readers.
        features_desc: the caller's description of the features (stored, compared on resume).
        config: the caller's preprocessing config (stored; compared on resume except
            :data:`OPERATIONAL_CONFIG_KEYS`).
        part: the ``--shard i/N`` index, used in shard names.
        shard_bytes: target shard size (all arrays of a shard together); a shard holds
            ``max(1, shard_bytes // bytes_per_chunk)`` chunks.
        created_by: stored in the manifest, e.g. ``"acids-data 0.1.0"``.

    Raises:
        UsageError: the directory holds a dataset made with other settings, or another writer has it open.
        DataError: the directory holds a damaged dataset.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        sample_rate: int,
        channels: int,
        chunk: int,
        hop: int,
        feature_hop: int | None,
        feature_keys: Sequence[str],
        features_desc: Mapping[str, Any],
        config: Mapping[str, Any],
        chunk_keys: Sequence[str] = (),
        part: int = 0,
        shard_bytes: int = 64 << 20,
        created_by: str = "acids-data",
    ) -> None:
        for name, v in (("sample_rate", sample_rate), ("channels", channels), ("chunk", chunk), ("hop", hop)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        keys = list(feature_keys)
        ckeys = list(chunk_keys)
        for k in keys + ckeys:
            if not isinstance(k, str) or not _KEY_RE.match(k) or k == AUDIO:
                raise ValueError(f"bad feature key {k!r} (letters, digits, _; not {AUDIO!r})")
        if len(set(keys + ckeys)) != len(keys) + len(ckeys):
            raise ValueError(f"duplicate feature or chunk keys in {keys + ckeys}")
        if keys and (not isinstance(feature_hop, (int, np.integer)) or feature_hop <= 0):
            raise ValueError("features need a positive feature_hop")
        if part < 0 or shard_bytes <= 0:
            raise ValueError("part must be >= 0 and shard_bytes > 0")
        self.root = Path(root)
        self.part = int(part)
        self.shard_bytes = int(shard_bytes)
        self.created_by = created_by
        self.feature_keys = keys
        self.chunk_keys = ckeys
        self._settings = {
            "sample_rate": int(sample_rate),
            "channels": int(channels),
            "chunk": int(chunk),
            "hop": int(hop),
            "feature_hop": int(feature_hop) if feature_hop is not None else None,
            "feature_keys": keys,
            "chunk_keys": ckeys,
            "features": _plain(dict(features_desc)),
            "config": _plain(dict(config)),
        }
        self._shards_dir = self.root / SHARDS
        self._shards: list[dict[str, Any]] = []
        self._committed: dict[str, int] = {}  # sha -> chunks committed (always a prefix 0..n-1)
        self._buffered: dict[str, int] = {}  # sha -> chunks waiting in the buffer
        self._buf: list[tuple[str, str, np.ndarray, dict[str, np.ndarray], int, list[int]]] = []
        self._buf_n = 0
        self._rows: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
            AUDIO: (AUDIO_DTYPE, (int(channels), int(chunk)))
        }
        self._per_shard: int | None = None
        self._files: dict[tuple[str | None, str], dict[str, Any]] = {}  # done entries, keyed (sha, path)
        self._pending: dict[tuple[str | None, str], dict[str, Any]] = {}  # waiting for their chunks
        self._by_sha: dict[str, tuple[str | None, str]] = {}  # sha -> key of its (first) entry
        self._extra: dict[str, Any] = {}
        self._next_k = 0
        self._closed = False
        self._lock_fd: int | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards_dir.mkdir(exist_ok=True)
        self._lock()
        try:
            self._open()
        except BaseException:
            self._unlock()
            raise

    # ---- opening / resuming

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"{self.root} is being written by another acids-preprocess run; "
                "give each run (and each --shard i/N part) its own -o"
            ) from None
        except OSError as e:  # a filesystem without locks (some NFS mounts): go on, unguarded
            log.warning("cannot lock %s (%s); make sure no other run writes there", self.root, e)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if getattr(self, "_lock_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the fd releases the flock
            self._lock_fd = None

    def _open(self) -> None:
        mpath = self.root / MANIFEST
        old: dict[str, Any] | None = None
        if mpath.exists():
            old = read_manifest(self.root)
            diffs = settings_differences(settings_of(old), self._settings)
            if diffs:
                raise UsageError(
                    f"{self.root} holds a dataset made with {'; '.join(diffs)}; "
                    "use another -o or the same settings"
                )
            self._extra = {k: old[k] for k in ("parts",) if k in old}
        for d in (self.root, self._shards_dir):
            for p in clean_temporaries(d):
                log.info("removed %s (left by a killed run)", p)
        markers = {p.stem for p in self._shards_dir.glob("*.json") if not is_temporary(p)}
        if markers and old is None:
            raise UsageError(
                f"{self._shards_dir} holds shards but no {MANIFEST} is beside it; use another -o"
            )
        for p in self._shards_dir.glob("*.npy"):
            if p.name.split(".", 1)[0] not in markers:
                log.info("removed %s (an uncommitted shard of a killed run)", p)
                p.unlink()
        # Committed shards: the manifest's order first, then markers written after the last manifest.
        names = [s["name"] for s in (old or {}).get("shards", [])]
        names += sorted(markers - set(names))
        for name in names:
            where = self._shards_dir / f"{name}.json"
            idx = read_shard_index(where)
            if sorted(idx["arrays"]) != sorted([AUDIO, *self.feature_keys, *self.chunk_keys]):
                raise DataError(f"{where}: arrays {sorted(idx['arrays'])} do not match the manifest")
            for fname in idx["arrays"].values():
                if not (self._shards_dir / fname).is_file():
                    raise DataError(f"{self._shards_dir / fname}: missing (the dataset is damaged)")
            for li, ci, _ in idx["chunks"]:
                sha = idx["files"][li]
                if ci != self._committed.get(sha, 0):
                    raise DataError(f"{where}: chunk {ci} of source {sha[:12]} is out of order")
                self._committed[sha] = ci + 1
            self._shards.append({"name": name, "n": idx["n"], "arrays": idx["arrays"]})
            m = _SHARD_RE.match(name)
            if m and int(m.group(1)) == self.part:
                self._next_k = max(self._next_k, int(m.group(2)) + 1)
        entries = list((old or {}).get("files", [])) + self._read_journal()
        for e in entries:
            key = (e.get("sha256"), e["path"])
            self._files[key] = e
            if key[0] is not None:
                self._by_sha.setdefault(key[0], key)
        self._write_manifest(complete=False)

    def _read_journal(self) -> list[dict[str, Any]]:
        path = self.root / JOURNAL
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:  # a line torn by a kill
                continue
            if isinstance(e, dict) and "path" in e and e.get("status") in STATUSES:
                entries.append(e)
        return entries

    # ---- queries

    def done_chunks(self, sha256: str) -> int:
        """Chunks of this source already committed (its chunks 0..n-1)."""
        return self._committed.get(sha256, 0)

    def committed_chunks(self) -> dict[str, int]:
        """``{sha256: chunks committed}`` for every source with committed chunks."""
        return dict(self._committed)

    def file_status(self, sha256: str) -> dict[str, Any] | None:
        """The file-table entry of this source if it is done (ok, padded or skipped), else None."""
        key = self._by_sha.get(sha256)
        e = self._files.get(key) if key is not None else None
        return dict(e) if e is not None else None

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as it would be written now (complete: false)."""
        return build_manifest(
            self._settings,
            created_by=self.created_by,
            shards=self._shards,
            files=list(self._files.values()),
            complete=False,
            extra=self._extra,
        )

    # ---- writing

    def add_chunks(
        self,
        sha256: str,
        path: str,
        audio: np.ndarray,
        features: Mapping[str, np.ndarray],
        first_chunk_index: int,
        starts: Sequence[int],
    ) -> None:
        """Buffer chunks ``first_chunk_index ..`` of one source; commit shards as the buffer fills.

        Args:
            sha256: the source's content hash.
            path: the source's path (recorded in the shard index).
            audio: int16 ``(n, C, L)``. The writer keeps a reference: do not modify it afterwards.
            features: ``{key: (n, ..., F)}`` for every feature key, and ``{key: (n, ...)}`` for every
                chunk key.
            first_chunk_index: index in the source of ``audio[0]``. Chunks below the next expected index
                (already committed or buffered) are dropped; a gap raises ValueError.
            starts: start sample in the source of each chunk.
        """
        self._check_open()
        if not isinstance(sha256, str) or not sha256:
            raise ValueError("add_chunks needs the source's sha256")
        audio = np.asarray(audio)
        C, L = self._settings["channels"], self._settings["chunk"]
        if audio.ndim != 3 or audio.shape[1:] != (C, L):
            raise ValueError(f"audio must be (n, {C}, {L}), got {audio.shape}")
        if audio.dtype != np.int16:
            raise ValueError(f"audio must be int16, got {audio.dtype}")
        n = audio.shape[0]
        starts = [int(s) for s in starts]
        if len(starts) != n:
            raise ValueError(f"{len(starts)} starts for {n} chunks")
        if set(features) != set(self.feature_keys) | set(self.chunk_keys):
            want = sorted(self.feature_keys + self.chunk_keys)
            raise ValueError(f"features {sorted(features)} != feature_keys + chunk_keys {want}")
        feats = {}
        frames = L // self._settings["feature_hop"] if self.feature_keys else 0
        for key in self.feature_keys:
            a = np.asarray(features[key])
            dtype = feature_dtype(key, a.dtype)
            row = tuple(a.shape[1:])
            if a.ndim < 2 or a.shape[0] != n or row[-1] != frames:
                raise ValueError(f"feature {key!r} must be (n={n}, ..., {frames}), got {a.shape}")
            known = self._rows.setdefault(key, (dtype, row))
            if known != (dtype, row):
                raise ValueError(f"feature {key!r}: rows {row} {dtype} after {known[1]} {known[0]}")
            feats[key] = a
        for key in self.chunk_keys:
            a = np.asarray(features[key])
            dtype = feature_dtype(key, a.dtype)
            row = tuple(a.shape[1:])
            if a.ndim < 1 or a.shape[0] != n:
                raise ValueError(f"chunk array {key!r} must be (n={n}, ...), got {a.shape}")
            if dtype.hasobject:
                raise ValueError(f"chunk array {key!r}: dtype {dtype} cannot be stored")
            known = self._rows.setdefault(key, (dtype, row))
            if known != (dtype, row):
                raise ValueError(f"chunk array {key!r}: rows {row} {dtype} after {known[1]} {known[0]}")
            feats[key] = a
        expected = self._committed.get(sha256, 0) + self._buffered.get(sha256, 0)
        first = int(first_chunk_index)
        if first > expected:
            raise ValueError(f"{path}: chunk {first} added before chunk {expected} (chunks come in order)")
        drop = expected - first
        if drop >= n:
            return
        if drop:
            audio, feats, starts = audio[drop:], {k: v[drop:] for k, v in feats.items()}, starts[drop:]
        m = n - drop
        self._buf.append((sha256, str(path), audio, feats, expected, starts))
        self._buffered[sha256] = self._buffered.get(sha256, 0) + m
        self._buf_n += m
        per_shard = self._chunks_per_shard()
        while self._buf_n >= per_shard:
            self._commit(per_shard)

    def _chunks_per_shard(self) -> int:
        if self._per_shard is None:
            row_bytes = sum(dt.itemsize * math.prod(shape) for dt, shape in self._rows.values())
            self._per_shard = max(1, self.shard_bytes // row_bytes)
        return self._per_shard

    def finish_file(self, entry: Mapping[str, Any]) -> None:
        """Record a source's file-table entry (status ok or padded, chunks, duration, ...).

        The entry counts (file_status, manifest) once all its chunks are committed. A second path with
        the content of an earlier one is recorded as skipped ("duplicate of ...") and adds no chunks.
        """
        self._check_open()
        info = dict(entry)
        path, sha = info.pop("path"), info.pop("sha256", None)
        status = info.pop("status", "ok")
        if status not in ("ok", "padded"):
            raise ValueError(f"finish_file: status must be ok or padded, got {status!r} (use skip_file)")
        if not isinstance(sha, str) or not sha:
            raise ValueError("finish_file: the entry needs a sha256")
        key = (sha, str(path))
        primary = self._by_sha.get(sha)
        if primary is not None and primary != key:
            reason = f"duplicate of {primary[1]} (same content)"
            info.pop("chunks", None)
            info.pop("reason", None)
            self._record(key, _entry(path, sha, "skipped", reason, 0, **info))
            return
        added = self._committed.get(sha, 0) + self._buffered.get(sha, 0)
        chunks = int(info.pop("chunks", added))
        if chunks != added:
            raise ValueError(f"finish_file({path}): the entry says {chunks} chunks but {added} were added")
        self._by_sha[sha] = key
        self._record(key, _entry(path, sha, status, info.pop("reason", None), chunks, **info))

    def skip_file(self, path: str, sha256: str | None, reason: str, **info: Any) -> None:
        """Record a source as skipped with its reason (persisted at once, through the journal)."""
        self._check_open()
        key = (sha256, str(path))
        added = self._committed.get(sha256, 0) + self._buffered.get(sha256, 0) if sha256 else 0
        if sha256:
            self._by_sha.setdefault(sha256, key)
        info.pop("chunks", None)
        self._record(key, _entry(path, sha256, "skipped", str(reason), added, **info))

    def _record(self, key: tuple[str | None, str], entry: dict[str, Any]) -> None:
        if key[0] is None or self._committed.get(key[0], 0) >= entry["chunks"]:
            self._pending.pop(key, None)
            self._files[key] = entry
            self._journal(entry)
        else:
            self._files.pop(key, None)
            self._pending[key] = entry

    def _journal(self, entry: dict[str, Any]) -> None:
        # Flushed, not fsynced: a kill cannot lose it; a power cut can, and then that file is simply
        # looked at again by the next run (an fsync per skipped file would cost more than that).
        with open(self.root / JOURNAL, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, allow_nan=False) + "\n")

    def _commit(self, n: int) -> None:
        """Write the first ``n`` buffered chunks as one shard, then the manifest."""
        name = f"part-{self.part:03d}-{self._next_k:05d}"
        pieces: dict[str, list[np.ndarray]] = {k: [] for k in self._rows}
        files: list[str] = []
        paths: list[str] = []
        local: dict[str, int] = {}
        chunks: list[tuple[int, int, int]] = []
        taken = used = 0  # chunks taken; buffer pieces used up
        split = 0  # chunks taken from a piece that is only partly used
        for sha, path, audio, feats, first, starts in self._buf:
            m = min(len(audio), n - taken)
            if m < len(audio):
                audio, feats, starts, split = audio[:m], {k: v[:m] for k, v in feats.items()}, starts[:m], m
            if sha not in local:
                local[sha] = len(files)
                files.append(sha)
                paths.append(path)
            chunks.extend((local[sha], first + j, starts[j]) for j in range(m))
            pieces[AUDIO].append(audio)
            for k, v in feats.items():
                pieces[k].append(v)
            taken += m
            if split:
                break
            used += 1
            if taken == n:
                break
        arrays = {k: (pieces[k], dt, shape) for k, (dt, shape) in self._rows.items()}
        index = write_shard(self._shards_dir, name, arrays, files, paths, chunks)
        # committed: only now take the chunks out of the buffer (a failed write leaves it as it was)
        if split:
            sha, path, audio, feats, first, starts = self._buf[used]
            rest = {k: v[split:] for k, v in feats.items()}
            self._buf[used] = (sha, path, audio[split:], rest, first + split, starts[split:])
        del self._buf[:used]
        self._next_k += 1
        self._buf_n -= n
        counts = dict.fromkeys(files, 0)
        for li, _, _ in chunks:
            counts[files[li]] += 1
        for sha, c in counts.items():
            self._committed[sha] = self._committed.get(sha, 0) + c
            self._buffered[sha] -= c
            if not self._buffered[sha]:
                del self._buffered[sha]
        self._shards.append({"name": name, "n": index["n"], "arrays": index["arrays"]})
        for key, e in list(self._pending.items()):
            if self._committed.get(key[0], 0) >= e["chunks"]:
                del self._pending[key]
                self._files[key] = e
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> dict[str, Any]:
        m = self.manifest
        m["complete"] = bool(complete)
        atomic_write_json(self.root / MANIFEST, m)
        with contextlib.suppress(FileNotFoundError):  # every done entry is in the manifest now
            os.unlink(self.root / JOURNAL)
        return m

    def flush(self) -> None:
        """Commit the buffered chunks as a shard (if any) and write the manifest."""
        self._check_open()
        if self._buf_n:
            self._commit(self._buf_n)
        else:
            self._write_manifest(complete=False)

    def close(self, complete: bool = True) -> dict[str, Any]:
        """Flush, write the manifest with ``complete``, release the directory; returns the manifest."""
        self._check_open()
        try:
            if self._buf_n:
                self._commit(self._buf_n)
            orphans = set(self._committed) - {k[0] for k in self._files}
            if orphans:
                log.warning("%d source(s) have chunks but no file entry (no finish_file)", len(orphans))
            return self._write_manifest(complete=complete)
        finally:
            self._closed = True
            self._unlock()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this ShardWriter is closed")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close(complete=True)
            return
        try:  # keep what was buffered (whole chunks): the run is incomplete, not broken
            self.close(complete=False)
        except Exception:
            log.exception("could not flush %s after an error", self.root)
            self._closed = True
            self._unlock()

    def __del__(self) -> None:
        self._unlock()


# --------------------------------------------------------------------------------------------- checking


def verify(root: str | os.PathLike[str] | Mapping[str, Any], *, checksums: bool = False) -> list[str]:
    """Check a dataset; returns a list of problems (empty when sound).

    Checks every shard's marker and arrays (shape, dtype, count), that each source's chunks appear
    once and in order, and the totals; with ``checksums`` also the sha256 of every array file.
    """
    d = dataset_root(root)
    m = read_manifest(d)
    problems: list[str] = []
    C, L, fh = m["channels"], m["chunk"], m.get("feature_hop")
    keys = [AUDIO, *m["feature_keys"], *m["chunk_keys"]]
    chunk_keys = set(m["chunk_keys"])
    seen: dict[str, int] = {}
    total = 0
    for s in m["shards"]:
        try:
            idx = read_shard_index(d / SHARDS / f"{s['name']}.json")
        except DataError as e:
            problems.append(str(e))
            continue
        n = idx["n"]
        total += n
        if n != s["n"]:
            problems.append(f"{s['name']}: manifest says {s['n']} chunks, index says {n}")
        if sorted(idx["arrays"]) != sorted(keys):
            problems.append(f"{s['name']}: arrays {sorted(idx['arrays'])}, expected {sorted(keys)}")
        for key, fname in idx["arrays"].items():
            p = d / SHARDS / fname
            try:
                a = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as e:
                problems.append(f"{p}: unreadable ({e})")
                continue
            if a.shape[0] != n:
                problems.append(f"{p}: {a.shape[0]} rows, expected {n}")
            if key == AUDIO and (a.shape[1:] != (C, L) or a.dtype != AUDIO_DTYPE):
                problems.append(f"{p}: {a.shape} {a.dtype}, expected (n, {C}, {L}) int16")
            if key != AUDIO and key not in chunk_keys and fh and a.shape[-1] != L // fh:
                problems.append(f"{p}: {a.shape[-1]} frames, expected {L // fh}")
            del a
            want = idx.get("sha256", {}).get(key)
            if checksums and want:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != want:
                    problems.append(f"{p}: sha256 mismatch")
        for li, ci, _ in idx["chunks"]:
            sha = idx["files"][li]
            if ci != seen.get(sha, 0):
                problems.append(f"{s['name']}: chunk {ci} of {sha[:12]} duplicated or out of order")
            seen[sha] = max(seen.get(sha, 0), ci + 1)
    if m.get("totals", {}).get("chunks") != total:
        problems.append(f"totals.chunks is {m.get('totals', {}).get('chunks')}, the shards hold {total}")
    for e in m["files"]:
        sha = e.get("sha256")
        if e.get("status") in ("ok", "padded") and seen.get(sha, 0) != e.get("chunks"):
            stored = seen.get(sha, 0)
            problems.append(f"{e['path']}: {e.get('chunks')} chunks in the file table, {stored} stored")
    return problems
