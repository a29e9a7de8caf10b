"""Decode audio files in-process, map channels and resample with soxr HQ, block by block.

Decoding uses libsndfile (`soundfile`): WAV, FLAC, Ogg/Vorbis (and Opus), MP3 and AIFF, at any sample rate and
channel count. Resampling uses `soxr.ResampleStream` at quality HQ; the streamed result equals a one-shot
`soxr.resample` of the whole file (bit for bit in our tests), while memory stays bounded by one decode block
plus the output array.

Every way a file can be unusable raises :class:`AudioFileError`, whose message is a short reason without the
path (the caller adds it). A WAV/AIFF file whose data ends before its header says is *decoded up to where the
data stops, with a logged warning*: the samples that are there are exact PCM, and losing a whole take to a
cut-off copy helps nobody. Compressed streams that break mid-file (FLAC "lost sync", a corrupt Ogg page) are
an error, because the decoder cannot say whether anything after the break is usable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from acids_core.errors import DataError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "AudioFileError",
    "AudioInfo",
    "load",
    "map_channels",
    "probe",
    "resample",
]

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc"}
)
RESAMPLER = "soxr-HQ"  # recorded in the dataset manifest

# Format names for messages, by extension (libsndfile sniffs the content; the extension says what was meant).
_FORMAT_BY_EXT = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
    ".aifc": "AIFF",
}
# libsndfile's log reports a chunk longer than the file as e.g. "data : 192000 (should be 95979)".
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)


class AudioFileError(DataError):
    """A file that cannot be used as audio (exit 65). ``str(e)`` is the short reason, without the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """What the container header says about a file.

    ``frames`` counts the frames actually present (libsndfile's figure: for a truncated WAV/AIFF it is what
    the file holds, for MP3 it may be an estimate). ``warning`` is a non-fatal problem found while opening,
    e.g. a truncated data chunk, or None.
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str | None
    warning: str | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header without decoding its samples.

    Args:
        path: an audio file with one of :data:`SUPPORTED_EXTENSIONS`.

    Returns:
        The :class:`AudioInfo`.

    Raises:
        AudioFileError: unsupported extension, missing/empty/unreadable file, not audio, no samples.
    """
    with _open(Path(path)) as (_, info):
        return info


def load(
    path: str | os.PathLike[str],
    sample_rate: int,
    channels: int | None = 1,
    *,
    block_frames: int = 1 << 18,
) -> np.ndarray:
    """Decode a whole file, map its channels and resample it, block by block.

    Memory holds one decoded block (``block_frames`` x input channels) plus the output. Channels are mapped
    before resampling when that leaves fewer to resample, after it otherwise (both are exact linear maps).

    A WAV/AIFF whose header declares more data than the file holds is decoded up to the end of the data with
    a warning on the ``acids_data.audio`` logger (also in :attr:`AudioInfo.warning`); so is any file that
    decodes to fewer frames than its header declares. A decoder error part-way through is an AudioFileError.

    Args:
        path: an audio file with one of :data:`SUPPORTED_EXTENSIONS`.
        sample_rate: output sample rate in Hz.
        channels: output channel count, or None to keep the file's (see :func:`map_channels`).
        block_frames: frames decoded per block (at the input rate).

    Returns:
        float32 array (C, T) at ``sample_rate``, C-contiguous.

    Raises:
        AudioFileError: see :func:`probe`; also NaN/Inf samples, a decode error, or no samples decoded.
        ValueError: a bad argument.
    """
    _check_rate(sample_rate)
    if channels is not None and channels < 1:
        raise ValueError(f"channels must be None or >= 1, got {channels}")
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    path = Path(path)
    with _open(path) as (f, info):
        if info.warning:
            logger.warning("%s: %s", path, info.warning)
        c_in = info.channels
        c_out = c_in if channels is None else channels
        map_first = c_out <= c_in  # resample the smaller number of channels
        c_mid = c_out if map_first else c_in
        stream = None
        if info.sample_rate != sample_rate:
            stream = soxr.ResampleStream(info.sample_rate, sample_rate, c_mid, dtype="float32", quality="HQ")
        out = _Growing(c_out, round(info.frames * sample_rate / info.sample_rate) + 64)
        buf = np.empty((block_frames, c_in), dtype=np.float32)
        decoded = 0
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True, out=buf)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioFileError(
                    f"truncated or corrupt {info.format}: {_sf_message(e)} "
                    f"(after {decoded} of {info.frames} frames)"
                ) from None
            n = len(block)
            last = n < block_frames
            if n and not np.isfinite(block).all():
                raise AudioFileError("contains NaN/Inf samples")
            decoded += n
            # (n, C) channels-last: soundfile's and soxr's layout
            y = _map_last(block, c_out) if map_first else block
            if stream is not None:
                y = stream.resample_chunk(y, last=last)
            out.append(y if map_first else _map_last(y, c_out))
            if last:
                break
    if decoded == 0:
        raise AudioFileError("no samples")
    short = info.frames - decoded
    if not info.warning and short > max(4608, info.frames // 100):  # MP3 lengths are estimates
        logger.warning(
            "%s: decoded %d of the %d frames the header declares; the file may be truncated",
            path,
            decoded,
            info.frames,
        )
    return out.result()


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr at quality HQ (linear phase, delay compensated, -132 dB alias rejection).

    Args:
        x: (C, T) or (T,) audio.
        sr_in: its sample rate in Hz.
        sr_out: the wanted sample rate in Hz.

    Returns:
        float32 array of the same rank, ``round(T * sr_out / sr_in)`` samples long.
    """
    _check_rate(sr_in)
    _check_rate(sr_out)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected (C, T) or (T,) audio, got shape {x.shape}")
    if sr_in == sr_out:
        return x.copy()
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")  # (T', C)
    return np.ascontiguousarray(y.T, dtype=np.float32)


def map_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """Map (C, T) audio to ``channels`` channels.

    - None: keep all channels;
    - 1: the mean of all channels (a plain mean: no pan law, no ITU 5.1 coefficients, LFE included);
    - equal to C: unchanged;
    - from mono to N: the channel repeated;
    - fewer than C (N > 1): the first N channels (for 5.1 in SMPTE order, N=2 gives front L/R);
    - more than C > 1: the channels repeated cyclically (stereo to 4: L R L R).

    Args:
        x: (C, T) audio.
        channels: wanted channel count, or None.

    Returns:
        (channels, T) float32 array (``x`` itself when nothing changes).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (C, T) audio, got shape {x.shape}")
    if channels is None or channels == x.shape[0]:
        return x
    if channels < 1:
        raise ValueError(f"channels must be None or >= 1, got {channels}")
    return np.ascontiguousarray(_map_last(x.T, channels).T)


# --- internals ----------------------------------------------------------------------------------------------


def _map_last(y: np.ndarray, channels: int) -> np.ndarray:
    """:func:`map_channels` on channels-last (T, C) data."""
    c = y.shape[1]
    if channels == c:
        return y
    if channels == 1:
        if c == 2:  # the common case, without a reduction along a length-2 axis
            return ((y[:, 0] + y[:, 1]) * np.float32(0.5))[:, None]
        return y.mean(axis=1, dtype=np.float32, keepdims=True)
    if channels < c:
        return y[:, :channels]
    return y[:, np.arange(channels) % c]


class _Growing:
    """A (C, T) float32 output buffer filled from channels-last blocks; grows when the estimate is short."""

    def __init__(self, channels: int, frames: int) -> None:
        self._a = np.empty((channels, max(frames, 1)), dtype=np.float32)
        self._n = 0

    def append(self, y: np.ndarray) -> None:
        m = len(y)
        if self._n + m > self._a.shape[1]:
            grown = np.empty((self._a.shape[0], max(2 * self._a.shape[1], self._n + m)), dtype=np.float32)
            grown[:, : self._n] = self._a[:, : self._n]
            self._a = grown
        self._a[:, self._n : self._n + m] = y.T
        self._n += m

    def result(self) -> np.ndarray:
        if self._n == self._a.shape[1]:
            return self._a
        return self._a[:, : self._n].copy()  # a copy, so the slack is freed


def _check_rate(sr: int) -> None:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {sr!r}")


@contextmanager
def _open(path: Path) -> Iterator[tuple[sf.SoundFile, AudioInfo]]:
    """Open ``path`` with libsndfile, turning every failure into an AudioFileError with a short reason."""
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = f"'{ext}'" if ext else "no extension"
        raise AudioFileError(
            f"unsupported format ({shown}; supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))})"
        )
    fmt = _FORMAT_BY_EXT[ext]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioFileError("file not found") from None
    except OSError as e:
        raise AudioFileError(f"cannot read: {e.strerror}") from None
    if path.is_dir():
        raise AudioFileError("is a directory")
    if not os.access(path, os.R_OK):
        raise AudioFileError("cannot read: permission denied")
    if size == 0:
        raise AudioFileError("empty file (0 bytes)")
    try:
        f = sf.SoundFile(path)
    except sf.LibsndfileError as e:
        raise AudioFileError(_open_failure(path, fmt, e)) from None
    except OSError as e:  # permission denied and the like
        raise AudioFileError(f"cannot read: {e.strerror or e}") from None
    with f:
        log = f.extra_info
        warning = None
        m = _SHORT_CHUNK.search(log)
        if m:
            declared, present = int(m.group(2)), int(m.group(3))
            if present < declared:
                pct = 100.0 * present / declared if declared else 0.0
                warning = (
                    f"truncated {fmt}: the data ends at {pct:.1f}% of the length its header declares; "
                    f"decoding the {f.frames / f.samplerate:.2f} s present"
                )
        if f.frames == 0 and f.format != "MP3":
            raise AudioFileError(f"no samples ({warning.split(';')[0]})" if warning else "no samples")
        info = AudioInfo(
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=int(f.frames),
            format=str(f.format),
            subtype=f.subtype or None,
            warning=warning,
        )
        yield f, info


def _open_failure(path: Path, fmt: str, e: sf.LibsndfileError) -> str:
    """A short reason for a file libsndfile cannot open; its first bytes are sniffed for non-audio content."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        head = b""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"not an audio file (looks like {what})"
    if head and b"\0" not in head:
        text = head.decode("utf-8", errors="replace")
        if sum(ch.isprintable() or ch.isspace() for ch in text) >= 0.95 * len(text):
            if text.lstrip().lower().startswith(("<!doctype html", "<html")):
                return "not an audio file (looks like an HTML page)"
            return "not an audio file (looks like text)"
    msg = _sf_message(e)
    # libsndfile answers "File does not exist or is not a regular file (possibly a pipe?)" when mpg123 finds
    # no MPEG frame in a regular file: say what it means
    if any(s in msg.lower() for s in ("not recognised", "unknown format", "possibly a pipe")):
        return f"not a valid {fmt} file (format not recognised)"
    return f"truncated or corrupt {fmt}: {msg}"


def _sf_message(e: Exception) -> str:
    """libsndfile's own message, without soundfile's "Error opening '<path>': " prefix."""
    msg = getattr(e, "error_string", None) or str(e)
    msg = msg.strip().rstrip(".")
    return msg.removeprefix("Error : ")
