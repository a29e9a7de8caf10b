"""Block-by-block resynthesis for ``acids-ddsp stream``: PCM in, PCM out, or f0/loudness frames in.

Features are the acids-data ones (:func:`acids_data.features.compute_features`), computed on a sliding
window of the input. They are not causal: the loudness window of frame i reaches ``n_fft / 2 - hop / 2``
samples past the frame, and swift-f0 needs 10 of its 16 ms frames after a frame (plus the next one, which
the interpolation to our frame centres reads) before that frame is final. :class:`FeatureStream` therefore
emits frame i once the input reaches ``(i + 1) * hop + lookahead`` samples (``lookahead`` = 12 tracker
frames, 192 ms, rounded up to a hop multiple), with windows aligned on the tracker's grid and enough past
context, so the streamed features are the offline features exactly (at 16 kHz; at other rates the
resampler to swift-f0's 16 kHz sees window edges, and f0 may differ by round-off). The audio out is the
offline resynthesis, delayed by the look-ahead and the block.

Wire formats: raw little-endian float32 mono (at the model's rate, or ``--rate``), or a WAV stream (detected
by its ``RIFF`` header: PCM 16/24/32-bit or float32, channels averaged, any rate). Input at another rate than
the model's is resampled on the fly (:class:`PcmReader`); the output is at the model's rate. Control-rate
input is interleaved float32 pairs (f0 in Hz, loudness in dB), one pair per frame.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import torch

from acids_core.errors import DataError
from acids_ddsp.model import DDSP

TRACKER_HOP_S = 256 / 16000  # swift-f0's frame period
TRACKER_FINAL_FRAMES = 12  # frames after a frame centre until its f0 (interpolated) is final
VOICED = 0.5


class FeatureStream:
    """Frame features of an audio stream, equal to the offline ones, with a fixed look-ahead.

    Args:
        sample_rate: of the audio (the model's).
        hop: frame hop (the model's).
        features: the feature function (:func:`acids_data.features.compute_features` by default).
    """

    def __init__(
        self,
        sample_rate: int,
        hop: int,
        features: Callable[..., dict[str, np.ndarray]] | None = None,
    ) -> None:
        from acids_data import features as feats

        self.sample_rate = sample_rate
        self.hop = hop
        self._compute = features or feats.compute_features
        n_fft = feats.default_n_fft(sample_rate, hop)
        tracker = TRACKER_HOP_S * sample_rate  # tracker frame in samples of this rate (768 at 48 kHz)
        # windows start on the tracker grid and on frames: a common multiple of both
        grid = round(tracker) if float(tracker).is_integer() else hop
        self.align = hop * grid // math.gcd(hop, grid)
        need = max(n_fft / 2 - hop / 2, TRACKER_FINAL_FRAMES * tracker - hop / 2)
        self.lookahead = math.ceil(need / hop) * hop
        context = (TRACKER_FINAL_FRAMES + 1) * tracker + n_fft / 2  # past audio a frame's features read
        self.context = math.ceil(context / self.align) * self.align
        self._buffer = np.zeros(0, np.float32)
        self._start = 0  # absolute sample of _buffer[0], a multiple of align
        self._total = 0  # samples received
        self._emitted = 0  # frames returned

    def _frames(self, upto: int) -> dict[str, np.ndarray]:
        feats = self._compute(self._buffer[None], self.sample_rate, self.hop, ["loudness", "f0"])
        first = self._emitted - self._start // self.hop
        out = {k: feats[k][first : first + upto - self._emitted] for k in ("f0", "f0_confidence", "loudness")}
        self._emitted = upto
        keep_from = max(0, self._emitted * self.hop - self.context) // self.align * self.align
        self._buffer = self._buffer[keep_from - self._start :]
        self._start = keep_from
        return out

    def _empty(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(0, np.float32) for k in ("f0", "f0_confidence", "loudness")}

    def push(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Add mono samples; return the frames that became final (f0, f0_confidence, loudness)."""
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, np.float32)])
        self._total += len(samples)
        final = max(0, (self._total - self.lookahead) // self.hop)
        return self._frames(final) if final > self._emitted else self._empty()

    def flush(self) -> dict[str, np.ndarray]:
        """End of stream: the remaining frames (zeros past the end, as offline); T // hop frames in all."""
        final = self._total // self.hop
        return self._frames(final) if final > self._emitted else self._empty()


def adjust_frames(
    f0: np.ndarray,
    confidence: np.ndarray,
    loudness: np.ndarray,
    pitch_shift: float = 0.0,
    loudness_shift: float = 0.0,
    unvoiced_db: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The per-frame (streamable) adjustments: semitones, dB, and attenuation of unvoiced frames."""
    f0 = np.asarray(f0, np.float32) * np.float32(2.0 ** (pitch_shift / 12.0))
    loudness = np.asarray(loudness, np.float32) + np.float32(loudness_shift)
    loudness = loudness - np.where(np.asarray(confidence) < VOICED, np.float32(unvoiced_db), np.float32(0))
    return f0.astype(np.float32), loudness.astype(np.float32)


# --- wire formats -----------------------------------------------------------------------------------


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = src.read(n - len(data))
        if not more:
            break
        data += more
    return data


class PcmReader:
    """Mono float32 blocks from raw float32 or a WAV stream on a binary file (a pipe: never seeks), at
    ``sample_rate``.

    The input's rate is the WAV header's, or ``input_rate`` for raw float32 (default: ``sample_rate``);
    another rate is resampled on the fly (``soxr.ResampleStream``, quality HQ, as acids-data resamples
    files: the streamed result equals a one-shot resampling of the whole input), so a block may hold a few
    samples more or fewer than asked (none at the start: the resampler's delay).
    """

    def __init__(self, src: BinaryIO, sample_rate: int, input_rate: int | None = None) -> None:
        self.src = src
        self.channels = 1
        self.dtype = np.dtype("<f4")
        self.sample_rate = sample_rate
        self.input_rate = input_rate or sample_rate
        if self.input_rate <= 0:
            raise DataError(f"stdin: the input rate must be positive, got {self.input_rate}")
        self._scale = 1.0
        self._pending = b""
        head = _read_exact(src, 4)
        if head == b"RIFF":
            self._wav_header()
        else:
            self._pending = head
        self._resampler = None
        self._flushed = False
        if self.input_rate != sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.input_rate, sample_rate, 1, dtype="float32", quality="HQ"
            )

    def _wav_header(self) -> None:
        riff = _read_exact(self.src, 8)
        if len(riff) < 8 or riff[4:] != b"WAVE":
            raise DataError("stdin: a RIFF stream that is not WAVE")
        fmt = None
        while True:
            chunk = _read_exact(self.src, 8)
            if len(chunk) < 8:
                raise DataError("stdin: WAV stream without a data chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                break
            body = _read_exact(self.src, size + (size & 1))
            if cid == b"fmt ":
                fmt = struct.unpack("<HHIIHH", body[:16])
                if fmt[0] == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the subformat's tag
                    fmt = (struct.unpack("<H", body[24:26])[0], *fmt[1:])
        if fmt is None:
            raise DataError("stdin: WAV stream without a fmt chunk")
        tag, channels, rate, _, _, bits = fmt
        if rate <= 0:
            raise DataError(f"stdin: WAV header with a sample rate of {rate} Hz")
        self.input_rate = rate
        kinds = {(3, 32): ("<f4", 1.0), (1, 16): ("<i2", 1 / 32768), (1, 32): ("<i4", 1 / 2**31)}
        if (tag, bits) == (1, 24):
            self.dtype, self._scale = np.dtype("V3"), 1 / 2**23
        elif (tag, bits) in kinds:
            name, self._scale = kinds[(tag, bits)]
            self.dtype = np.dtype(name)
        else:
            raise DataError(f"stdin: WAV format tag {tag} with {bits} bits is not supported")
        self.channels = channels

    def read(self, frames: int) -> np.ndarray | None:
        """About ``frames`` mono samples at ``sample_rate`` (exactly, up to the end, without resampling),
        None at end of stream."""
        x = self._read_input(frames if self._resampler is None else self._input_frames(frames))
        if self._resampler is None:
            return x
        if x is not None:
            return self._resampler.resample_chunk(x)
        if self._flushed:
            return None
        self._flushed = True  # the resampler's tail
        tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        return tail if tail.size else None

    def _input_frames(self, frames: int) -> int:
        return max(1, round(frames * self.input_rate / self.sample_rate))

    def _read_input(self, frames: int) -> np.ndarray | None:
        """Up to ``frames`` mono samples at the input rate (fewer at the end), None at end of stream."""
        width = self.dtype.itemsize * self.channels
        want = frames * width - len(self._pending)
        data = self._pending + _read_exact(self.src, max(0, want))
        usable = len(data) // width * width
        self._pending = data[usable:]
        if usable == 0:
            return None
        raw = data[:usable]
        if self.dtype.kind == "V":  # 24-bit little-endian PCM
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            values = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        else:
            values = np.frombuffer(raw, self.dtype)
        x = values.astype(np.float32) * np.float32(self._scale)
        return x.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)


def wav_stream_header(sample_rate: int) -> bytes:
    """A float32 mono WAV header for a stream of unknown length (sizes at their maximum, as sox does)."""
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", 0xFFFFFFFF - 36))
    )


# --- the two entries ------------------------------------------------------------------------------------


def _synth(model: DDSP, f0: np.ndarray, loudness: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
    if len(f0) == 0:
        return np.zeros(0, np.float32)
    x = None if audio is None else torch.from_numpy(audio)[None]
    with torch.inference_mode():
        return model(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None], x)[0, 0].numpy()


def stream_audio(
    model: DDSP,
    reader: PcmReader,
    block: int,
    *,
    pitch_shift: float = 0.0,
    loudness_shift: float = 0.0,
    unvoiced_db: float = 0.0,
) -> Iterator[np.ndarray]:
    """Audio blocks in, resynthesised audio out (the model streams; features as :class:`FeatureStream`).

    The autoencoder variant's encoder streams on the input audio of the frames the features release (the
    same delay), so z is the offline z of the same input.
    """
    features = FeatureStream(model.sample_rate, model.hop)
    model.eval().set_streaming(True)
    pending = np.zeros(0, np.float32)  # input audio of the frames not released yet (encoder only)
    while True:
        x = reader.read(block)
        frames = features.push(x) if x is not None else features.flush()
        audio = None
        if model.has_encoder:
            if x is not None:
                pending = np.concatenate([pending, x])
            n = len(frames["f0"]) * model.hop
            audio, pending = pending[:n], pending[n:]
        f0, loudness = adjust_frames(
            frames["f0"],
            frames["f0_confidence"],
            frames["loudness"],
            pitch_shift,
            loudness_shift,
            unvoiced_db,
        )
        yield _synth(model, f0, loudness, audio)
        if x is None:
            return


def stream_controls(model: DDSP, src: BinaryIO, frames: int) -> Iterator[np.ndarray]:
    """Interleaved float32 (f0 Hz, loudness dB) frames in, ``hop`` samples of audio out per frame.

    The autoencoder variant decodes with the training set's mean z (there is no audio to encode)."""
    model.eval().set_streaming(True)
    pending = b""
    while True:
        data = pending + _read_exact(src, frames * 8 - len(pending))
        usable = len(data) // 8 * 8
        pending = data[usable:]
        if usable == 0:
            return
        pairs = np.frombuffer(data[:usable], "<f4").reshape(-1, 2)
        yield _synth(model, np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1]))
        if usable < frames * 8:
            return
