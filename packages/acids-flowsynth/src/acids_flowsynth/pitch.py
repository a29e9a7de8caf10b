"""Pitch of a note and a duration-preserving pitch shift, to bring any note to the dataset's C4.

The reference server (``osc_server.transform_wave``) tracks the pitch of an incoming sound and shifts it
to C4 before encoding, since the models only saw C4 renders. Here:

* :func:`note_pitch`: the median f0 of the confidently voiced frames of the held part (acids-data's
  swift-f0 tracker), or None for an unpitched sound;
* :func:`shift_pitch`: a phase-vocoder time stretch by the pitch ratio followed by a resampling back to the
  original length (numpy; the same scheme as ``librosa.effects.pitch_shift``), so envelope times are kept.
"""

from __future__ import annotations

import math

import numpy as np

N_FFT = 2048
HOP = 512
MIN_VOICED = 0.25  # fraction of the analysed frames that must be voiced for the note to have a pitch


def midi_of(hz: float) -> float:
    return 69.0 + 12.0 * math.log2(hz / 440.0)


def hz_of(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def note_pitch(x: np.ndarray, sample_rate: int, *, seconds: float | None = 3.0) -> float | None:
    """The f0 (Hz) of mono audio ``x`` (T,): the median over frames with voicing confidence >= 0.5 of
    the first ``seconds`` (the held part of a dataset note), or None when fewer than a quarter are voiced."""
    from acids_data.features import f0 as track

    hop = 256
    seg = x if seconds is None else x[: max(hop, round(seconds * sample_rate))]
    f0, conf = track(np.asarray(seg, np.float32), sample_rate, hop)
    voiced = conf >= 0.5
    if f0.size == 0 or voiced.mean() < MIN_VOICED:
        return None
    return float(np.median(f0[voiced]))


def _stft(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    pad = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
    n = 1 + (len(pad) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    return np.fft.rfft(pad[idx] * win, axis=-1)  # (frames, bins)


def time_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """Phase-vocoder time stretch of mono ``x`` (T,) to about ``factor`` x its length (pitch kept)."""
    win = np.hanning(N_FFT + 1)[:-1].astype(np.float64)
    spec = _stft(np.asarray(x, np.float64), win)
    n = spec.shape[0]
    steps = np.arange(0.0, n - 1, 1.0 / factor)
    advance = 2.0 * np.pi * HOP * np.arange(spec.shape[1]) / N_FFT
    spec = np.concatenate([spec, np.zeros_like(spec[:1])])
    phase = np.angle(spec[0])
    out = np.empty((len(steps), spec.shape[1]), np.complex128)
    for j, t in enumerate(steps):
        k, a = int(t), t - int(t)
        c0, c1 = spec[k], spec[k + 1]
        out[j] = ((1.0 - a) * np.abs(c0) + a * np.abs(c1)) * np.exp(1j * phase)
        d = np.angle(c1) - np.angle(c0) - advance
        phase = phase + advance + d - 2.0 * np.pi * np.round(d / (2.0 * np.pi))
    frames = np.fft.irfft(out, n=N_FFT, axis=-1) * win
    length = HOP * (len(steps) - 1) + N_FFT
    y = np.zeros(length)
    norm = np.zeros(length)
    for j, f in enumerate(frames):
        y[j * HOP : j * HOP + N_FFT] += f
        norm[j * HOP : j * HOP + N_FFT] += win**2
    y = y / np.maximum(norm, 1e-3 * norm.max())
    return y[N_FFT // 2 : N_FFT // 2 + round(len(x) * factor)].astype(np.float32)


def shift_pitch(x: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Mono ``x`` (T,) shifted by ``semitones``, same length: stretched by the ratio, then resampled."""
    from acids_data.audio import resample

    if abs(semitones) < 1e-3:
        return np.asarray(x, np.float32).copy()
    ratio = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(x, ratio)
    # played back faster by `ratio`: resample to sample_rate / ratio (rounded to an integer rate: the
    # pitch error is below 0.1 cent at 16 kHz and up)
    y = resample(stretched, max(1, round(sample_rate * ratio)), sample_rate)
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)].astype(np.float32)
