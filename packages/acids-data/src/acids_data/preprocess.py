"""The preprocessing run: sources → (worker processes) decode, resample, chunk, features → one writer.

Each file is one unit of work, done in a worker process (or in-process with ``jobs=1``) and wrapped so
that a bad file becomes a *skipped* entry with its reason, never a crash or a hang. Results come back in
input order (``imap``), so the dataset's chunk order is deterministic; the main process is the single
writer (:class:`~acids_data.store.ShardWriter`), which commits shards atomically. A re-run skips files
already committed (by content hash) and finishes partially committed ones chunk-exactly.

Memory: one file's decoded audio + features per worker, plus one shard buffer in the writer, whatever the
size of the dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from acids_core.errors import DataError, UsageError
from acids_core.log import Progress, get_logger
from acids_data import __version__
from acids_data.scan import Source

log = get_logger("data.preprocess")

FEATURE_CHOICES = ("loudness", "f0", "mel")
SILENT_PEAK = 10 ** (-90 / 20)  # below -90 dBFS everywhere: nothing to learn from


def default_feature_hop(sample_rate: int) -> int:
    """The power of two nearest to 10 ms: 128 at 16 kHz, 256 at 22.05/24 kHz, 512 at 44.1/48 kHz."""
    return 2 ** round(math.log2(sample_rate / 100))


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the content of a dataset (stored in its manifest).

    Attributes:
        sample_rate: output rate in Hz.
        channels: output channels (1 = mean of all input channels).
        chunk: chunk length in samples.
        hop: distance between chunk starts (None = chunk: no overlap).
        features: per-chunk features among loudness, f0, mel.
        feature_hop: samples per feature frame (None = the power of two nearest 10 ms).
        n_mels: mel bands when ``mel`` is asked for.
        pad: what to do with audio shorter than a chunk — ``zero``: pad it (a file shorter than one
            chunk becomes one padded chunk; a tail of at least half a chunk becomes one more),
            ``skip``: leave it out.
        trim_db: if set, trim leading/trailing audio quieter than this (dBFS, per feature frame) and drop
            chunks that are entirely below it.
    """

    sample_rate: int = 44100
    channels: int = 1
    chunk: int = 131072
    hop: int | None = None
    features: tuple[str, ...] = ("loudness", "f0")
    feature_hop: int | None = None
    n_mels: int = 64
    pad: Literal["zero", "skip"] = "zero"
    trim_db: float | None = None

    @property
    def chunk_hop(self) -> int:
        return self.hop or self.chunk

    @property
    def frame_hop(self) -> int:
        return self.feature_hop or default_feature_hop(self.sample_rate)

    def check(self) -> None:
        """Raise UsageError for settings that cannot work together."""
        if not 8000 <= self.sample_rate <= 384000:
            raise UsageError(f"--sample-rate {self.sample_rate}: expected 8000..384000 Hz")
        if self.channels < 1 or self.channels > 64:
            raise UsageError(f"--channels {self.channels}: expected 1..64")
        if self.chunk < 256:
            raise UsageError(f"--chunk {self.chunk}: expected at least 256 samples")
        if self.chunk_hop < 1:
            raise UsageError(f"--hop {self.hop}: expected a positive number of samples")
        unknown = [f for f in self.features if f not in FEATURE_CHOICES]
        if unknown:
            raise UsageError(
                f"--features: unknown {', '.join(unknown)} (choose from {', '.join(FEATURE_CHOICES)})"
            )
        if self.features:
            fh = self.frame_hop
            if self.chunk % fh or self.chunk_hop % fh:
                raise UsageError(
                    f"--chunk {self.chunk} and --hop {self.chunk_hop} must be multiples of the feature hop"
                    f" {fh} (so feature frames stay aligned with chunks); change --feature-hop or --chunk"
                )

    def feature_keys(self) -> list[str]:
        keys = []
        for f in self.features:
            keys += ["f0", "f0_confidence"] if f == "f0" else [f]
        return keys

    def to_manifest(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "chunk": self.chunk,
            "hop": self.chunk_hop,
            "features": list(self.features),
            "feature_hop": self.frame_hop if self.features else None,
            "n_mels": self.n_mels if "mel" in self.features else None,
            "pad": self.pad,
            "trim_db": self.trim_db,
            "resampler": "soxr-HQ",
            "downmix": "mean" if self.channels == 1 else "keep/repeat",
        }


# ----------------------------------------------------------------------------------------------------------
# the per-file work (runs in worker processes)


@dataclass
class FileResult:
    """What a worker sends back for one source."""

    path: str
    sha256: str | None
    status: Literal["ok", "padded", "skipped", "done"]
    reason: str | None = None
    audio: np.ndarray | None = None  # int16 (n, C, L)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # each (n, ...)
    first_chunk: int = 0
    starts: list[int] = field(default_factory=list)
    total_chunks: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(cfg: PreprocessConfig, done: dict[str, int], finished: frozenset[str]) -> None:
    """Pool initialiser: the config and what a previous run already committed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _WORKER_STATE.update(cfg=cfg, done=done, finished=finished)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        # the decoder's messages start with the path; the caller adds it again
        self.sink.append(msg.split(": ", 1)[1] if msg.startswith("/") and ": " in msg else msg)


@contextlib.contextmanager
def _captured_warnings(name: str, sink: list[str]) -> Iterator[None]:
    """Collect a logger's warnings into ``sink`` (they reach the user once, from the writer process)."""
    logger = logging.getLogger(name)
    handler = _ListHandler(sink)
    old = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def _chunk_starts(n_samples: int, cfg: PreprocessConfig) -> tuple[list[int], int]:
    """Chunk start samples for a signal of ``n_samples``, and the padded length needed."""
    chunk, hop = cfg.chunk, cfg.chunk_hop
    if n_samples < chunk:
        return ([0], chunk) if cfg.pad == "zero" else ([], n_samples)
    starts = list(range(0, n_samples - chunk + 1, hop))
    tail_start = starts[-1] + hop
    if cfg.pad == "zero" and tail_start < n_samples and n_samples - tail_start >= chunk // 2:
        starts.append(tail_start)
    return starts, max(n_samples, starts[-1] + chunk)


def _trim(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Trim leading/trailing frames quieter than ``cfg.trim_db`` (frame-aligned, so features stay aligned)."""
    fh = cfg.frame_hop
    n = x.shape[-1] // fh
    if n == 0:
        return x
    frames = x[:, : n * fh].reshape(x.shape[0], n, fh)
    rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=(0, 2)) + 1e-20)
    loud = np.flatnonzero(rms_db > cfg.trim_db)
    if loud.size == 0:
        return x[:, :0]
    return x[:, loud[0] * fh : (loud[-1] + 1) * fh]


def process_file(source: Source, cfg: PreprocessConfig | None = None) -> FileResult:
    """Decode, resample, chunk and analyse one file. Never raises for a bad file: it is a skipped result."""
    from acids_data import audio, features

    cfg = cfg or _WORKER_STATE["cfg"]
    done: dict[str, int] = _WORKER_STATE.get("done", {})
    finished: frozenset[str] = _WORKER_STATE.get("finished", frozenset())
    t0 = time.process_time()
    path = str(source.path)
    result = FileResult(path=path, sha256=None, status="skipped")
    try:
        try:
            size = source.path.stat().st_size
        except OSError as e:
            result.reason = f"cannot read ({e.strerror})"
            return result
        if size == 0:
            result.reason = "empty file (0 bytes)"
            return result
        sha = file_sha256(source.path)
        result.sha256 = sha
        if sha in finished:
            result.status = "done"
            return result
        info = audio.probe(source.path)
        result.info = {
            "duration": round(info.duration, 6),
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "format": info.format,
        }
        with _captured_warnings("acids_data.audio", result.warnings):
            x = audio.load(source.path, cfg.sample_rate, cfg.channels)
        if cfg.trim_db is not None:
            x = _trim(x, cfg)
            if x.shape[-1] == 0:
                result.reason = f"silent: nothing above {cfg.trim_db:g} dBFS"
                return result
        n = x.shape[-1]
        if n == 0:
            result.reason = "no samples"
            return result
        peak = float(np.max(np.abs(x)))
        if peak < SILENT_PEAK:
            result.reason = "silent (digital silence, peak below -90 dBFS)"
            return result
        starts, padded_len = _chunk_starts(n, cfg)
        if not starts:
            result.reason = (
                f"shorter than one chunk ({n / cfg.sample_rate:.2f} s < {cfg.chunk / cfg.sample_rate:.2f} s);"
                " skipped (--pad zero keeps it, zero-padded)"
            )
            return result
        if padded_len > n:
            x = np.pad(x, ((0, 0), (0, padded_len - n)))
        feats: dict[str, np.ndarray] = {}
        if cfg.features:
            feats = features.compute_features(
                x, cfg.sample_rate, cfg.frame_hop, cfg.features, n_mels=cfg.n_mels
            )
        if cfg.trim_db is not None:
            # drop chunks that are entirely below the threshold (the trimmed file can still hold long pauses)
            keep = []
            for s in starts:
                seg = x[:, s : s + cfg.chunk].astype(np.float64)
                if 10 * np.log10(np.mean(seg**2) + 1e-20) > cfg.trim_db:
                    keep.append(s)
            starts = keep or starts[:1]
        result.total_chunks = len(starts)
        first = done.get(sha, 0)
        starts_todo = starts[first:]
        result.first_chunk = first
        result.starts = starts_todo
        clipped = int(np.count_nonzero(np.abs(x) > 1.0))
        if clipped:
            result.warnings.append(f"{clipped} samples above full scale were clipped (peak {peak:.2f})")
        pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)
        L, fh = cfg.chunk, cfg.frame_hop
        result.audio = (
            np.stack([pcm[:, s : s + L] for s in starts_todo])
            if starts_todo
            else np.zeros((0, pcm.shape[0], L), np.int16)
        )
        for key, arr in feats.items():
            frames = L // fh
            pieces = [arr[..., s // fh : s // fh + frames] for s in starts_todo]
            shape = (0, *arr.shape[:-1], frames)
            result.features[key] = np.stack(pieces) if pieces else np.zeros(shape, arr.dtype)
        result.status = "padded" if padded_len > n else "ok"
        if n < cfg.chunk:
            result.reason = f"shorter than one chunk ({n / cfg.sample_rate:.2f} s): zero-padded"
        elif padded_len > n:
            result.reason = "last chunk zero-padded"
        result.info["chunks"] = len(starts)
        return result
    except Exception as e:  # one bad file must never stop the run: it becomes a skipped entry
        from acids_data.audio import AudioFileError

        result.status = "skipped"
        result.audio = None
        result.features = {}
        result.reason = str(e) if isinstance(e, (AudioFileError, DataError)) else f"{type(e).__name__}: {e}"
        return result
    finally:
        result.cpu_seconds = time.process_time() - t0


# ----------------------------------------------------------------------------------------------------------
# the run (main process: the single writer)


@dataclass
class RunSummary:
    root: Path
    manifest: dict[str, Any]
    files_ok: int = 0
    files_skipped: int = 0
    files_already_done: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    complete: bool = True


def _results(
    sources: Sequence[Source],
    cfg: PreprocessConfig,
    jobs: int,
    done: dict[str, int],
    finished: frozenset[str],
) -> Iterator[FileResult]:
    if jobs <= 1 or len(sources) <= 1:
        _init_state = dict(_WORKER_STATE)
        _WORKER_STATE.update(cfg=cfg, done=done, finished=finished)
        try:
            for s in sources:
                yield process_file(s)
        finally:
            _WORKER_STATE.clear()
            _WORKER_STATE.update(_init_state)
        return
    # fork starts workers for free, but is only safe while the parent holds no threads of a native library
    # (torch, onnxruntime): acids-preprocess itself never imports them in the parent; a library caller may
    forkable = sys.platform == "linux" and not ({"torch", "onnxruntime"} & set(sys.modules))
    ctx = multiprocessing.get_context("fork" if forkable else "spawn")
    with ctx.Pool(
        jobs, initializer=_init_worker, initargs=(cfg, done, finished), maxtasksperchild=200
    ) as pool:
        try:
            yield from pool.imap(process_file, sources, chunksize=1)
        except BaseException:
            pool.terminate()
            raise


def run(
    sources: Sequence[Source],
    out: Path,
    cfg: PreprocessConfig,
    *,
    jobs: int = 1,
    part: int = 0,
    shard: tuple[int, int] = (0, 1),
    strict: bool = False,
    shard_bytes: int = 64 << 20,
    on_skip: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Preprocess ``sources`` into the dataset at ``out`` (created or resumed).

    Raises:
        DataError: with ``strict``, at the first bad file (what was committed before it is kept).
    """
    from acids_data import features as feature_mod
    from acids_data.store import ShardWriter

    cfg.check()
    config = cfg.to_manifest()
    config["shard"] = f"{shard[0]}/{shard[1]}"
    desc = (
        feature_mod.describe(cfg.features, cfg.sample_rate, cfg.frame_hop, cfg.n_mels) if cfg.features else {}
    )
    writer = ShardWriter(
        out,
        sample_rate=cfg.sample_rate,
        channels=cfg.channels,
        chunk=cfg.chunk,
        hop=cfg.chunk_hop,
        feature_hop=cfg.frame_hop if cfg.features else None,
        feature_keys=cfg.feature_keys(),
        features_desc=desc,
        config=config,
        part=part,
        shard_bytes=shard_bytes,
        created_by=f"acids-data {__version__}",
    )
    summary = RunSummary(root=out, manifest={})
    done: dict[str, int] = {}
    finished: set[str] = set()
    # what a previous (possibly killed) run committed: finished files are skipped, partial ones resumed
    finished_shas, partial = writer_resume_state(writer)
    finished |= finished_shas
    done.update(partial)
    if finished or partial:
        log.info(f"resuming: {len(finished)} file(s) already done, {len(partial)} partly done")

    audio_seconds = 0.0
    complete = False
    try:
        with Progress(total=len(sources), desc="preprocess", unit="files") as progress:
            for res in _results(sources, cfg, jobs, done, frozenset(finished)):
                for w in res.warnings:
                    log.warning(f"{res.path}: {w}")
                if res.status == "done":
                    summary.files_already_done += 1
                elif res.status == "skipped":
                    summary.files_skipped += 1
                    summary.skipped.append((res.path, res.reason or "unknown"))
                    log.error(f"skipped {res.path}: {res.reason}")
                    if on_skip:
                        on_skip(res.path, res.reason or "")
                    writer.skip_file(res.path, res.sha256, res.reason or "unknown", **res.info)
                    if strict:
                        raise DataError(f"{res.path}: {res.reason} (--strict stops at the first bad file)")
                else:
                    assert res.sha256 is not None and res.audio is not None
                    if res.status == "padded":
                        # a file shorter than one chunk deserves a word; a padded tail is routine
                        level = logging.WARNING if "shorter" in (res.reason or "") else logging.DEBUG
                        log.log(level, f"{res.path}: {res.reason}")
                    if len(res.audio):
                        writer.add_chunks(
                            res.sha256, res.path, res.audio, res.features, res.first_chunk, res.starts
                        )
                    summary.chunks_written += len(res.audio)
                    entry = {
                        "path": res.path,
                        "sha256": res.sha256,
                        "status": res.status,
                        "reason": res.reason,
                        "chunks": res.total_chunks,
                        **({"warnings": res.warnings} if res.warnings else {}),
                        **{k: v for k, v in res.info.items() if k != "chunks"},
                    }
                    writer.finish_file(entry)
                    summary.files_ok += 1
                    audio_seconds += res.info.get("duration", 0.0)
                progress.update(1, audio_s=round(audio_seconds, 1))
        complete = True
    finally:
        summary.manifest = writer.close(complete=complete)
        summary.complete = complete
    return summary


def writer_resume_state(writer: Any) -> tuple[set[str], dict[str, int]]:
    """(sha256 of files fully committed, {sha256: chunks committed} for files partly committed)."""
    finished = {
        e["sha256"]
        for e in writer.manifest.get("files", [])
        if e.get("sha256") and e.get("status") in ("ok", "padded")
    }
    partial = {sha: n for sha, n in writer.committed_chunks().items() if sha not in finished and n > 0}
    return finished, partial
