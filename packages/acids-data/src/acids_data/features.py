"""Frame-aligned features (loudness, f0 + confidence, log-mel), computed on a whole resampled file.

Alignment contract (quoted in the dataset manifest as :data:`ALIGNMENT`): with a hop of H samples, a signal
of T samples has F = T // H frames; frame i describes the samples [i*H, (i+1)*H) and its analysis window is
centred on sample i*H + H/2, with zeros outside the signal. A chunk that starts at sample s (a multiple of H)
and is L samples long therefore uses frames [s // H, s // H + L // H). (For an odd H the STFT window is
centred half a sample early, on i*H + (H-1)/2; the f0 interpolation uses the exact i*H + H/2.)

The preprocessor computes features once per file (so the windows see real context across chunk boundaries)
and slices them per chunk. Only numpy, scipy and soxr are imported here; the f0 tracker (swift-f0 on
onnxruntime) is imported on the first call to :func:`f0`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.fft
import soxr

__all__ = [
    "ALIGNMENT",
    "FEATURE_NAMES",
    "a_weighting_db",
    "compute_features",
    "default_n_fft",
    "describe",
    "f0",
    "log_mel",
    "loudness",
]

FEATURE_NAMES = ("loudness", "f0", "mel")  # "f0" produces two arrays: "f0" and "f0_confidence"
ALIGNMENT = (
    "With a hop of H samples, a signal of T samples has F = T // H frames; frame i describes the samples "
    "[i*H, (i+1)*H) and its analysis window is centred on sample i*H + H/2 (zero padding outside the "
    "signal); a chunk starting at sample s (a multiple of H) with L samples uses frames "
    "[s // H, s // H + L // H)."
)

# swift-f0 0.3: mono 16 kHz in, one frame per 256 samples; frame j is centred on sample 256*j (t = 16 ms * j),
# checked with tone bursts (see tests). Confidence >= 0.5 means voiced.
TRACKER_RATE = 16000
TRACKER_HOP = 256
F0_MIN = 46.875
F0_MAX = 2093.75
VOICED_THRESHOLD = 0.5
_MEL_FLOOR = 1e-10  # power floor before the log of the mel spectrogram

_tracker_cache: tuple[int, Any] | None = None  # (pid, swift_f0.SwiftF0): one ONNX session per process


def a_weighting_db(freqs_hz: np.ndarray) -> np.ndarray:
    """IEC 61672-1 A-weighting, normalised to exactly 0 dB at 1 kHz.

    Args:
        freqs_hz: frequencies in Hz (any shape).

    Returns:
        float64 gains in dB, same shape; -inf at 0 Hz.
    """
    f2 = np.square(np.asarray(freqs_hz, dtype=np.float64))

    def r_a(f2: np.ndarray) -> np.ndarray:
        c1, c2, c3, c4 = 20.598997**2, 107.65265**2, 737.86223**2, 12194.217**2
        return c4 * f2**2 / ((f2 + c1) * np.sqrt((f2 + c2) * (f2 + c3)) * (f2 + c4))

    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(r_a(f2)) - 20.0 * np.log10(r_a(np.float64(1000.0**2)))


def default_n_fft(sample_rate: int, hop: int) -> int:
    """FFT size used when none is given: 2048 at 44.1/48 kHz scaled with the rate (the power of two nearest
    to 46.4 ms: 512 at 8 kHz, 1024 at 16-22.05 kHz, 4096 at 96 kHz), and never shorter than the hop."""
    n = 2 ** round(math.log2(sample_rate * 2048 / 44100))
    return max(n, 2 ** math.ceil(math.log2(hop)))


def loudness(
    x: np.ndarray, sample_rate: int, hop: int, n_fft: int | None = None, floor_db: float = -120.0
) -> np.ndarray:
    """A-weighted loudness per frame, in dB relative to a full-scale sine.

    Per frame: power spectrum |X|^2 of the Hann-windowed frame, averaged over channels, weighted by the
    A-curve in the power domain (|X|^2 * 10**(A/10)), averaged over bins, then 10*log10 relative to the same
    average for a full-scale (amplitude 1) 1 kHz sine, which therefore reads 0 dB (the AES17 dBFS convention:
    an unweighted reading is the mean square relative to 0.5). A -20 dBFS sine reads -20 dB, silence reads
    ``floor_db``.

    Args:
        x: (C, T) or (T,) audio.
        sample_rate: in Hz.
        hop: H, in samples.
        n_fft: window and FFT size; default :func:`default_n_fft`.
        floor_db: lowest value returned.

    Returns:
        (F,) float32, F = T // hop.
    """
    x = _as_2d(x)
    n_fft = n_fft or default_n_fft(sample_rate, hop)
    (db,) = _spectral(x, hop, n_fft, [_loudness_weights(sample_rate, n_fft)])
    return _power_db(db[:, 0], floor_db)


def log_mel(
    x: np.ndarray,
    sample_rate: int,
    hop: int,
    n_mels: int = 64,
    n_fft: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Log mel spectrogram: natural log of mel-filtered power, Slaney mel scale and Slaney (area) norm.

    Power is |X|^2 of the Hann-windowed frame (no scaling, channels averaged), the filters are librosa's
    default ones (``htk=False, norm="slaney"``), and the log is ln(max(mel, 1e-10)).

    Args:
        x: (C, T) or (T,) audio.
        sample_rate: in Hz.
        hop: H, in samples.
        n_mels: number of mel bands.
        n_fft: window and FFT size; default :func:`default_n_fft`.
        fmin: lowest filter edge in Hz.
        fmax: highest filter edge in Hz; default sample_rate / 2.

    Returns:
        (n_mels, F) float32, F = T // hop.
    """
    x = _as_2d(x)
    n_fft = n_fft or default_n_fft(sample_rate, hop)
    (mel,) = _spectral(x, hop, n_fft, [_mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)])
    return _log_floor(mel).T.copy()


def f0(
    x: np.ndarray, sample_rate: int, hop: int, fmin: float = F0_MIN, fmax: float = F0_MAX
) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency and voicing confidence per frame, with swift-f0.

    The channels are averaged, the signal is resampled to 16 kHz (soxr HQ) and tracked once (16 ms frames),
    then brought to this module's frame centres (i*H + H/2) / sample_rate: f0 is interpolated in
    log-frequency between two voiced neighbours (confidence >= 0.5) and taken from the nearest tracker frame
    otherwise; confidence is interpolated linearly. Unvoiced frames keep the tracker's best pitch guess
    (never 0): gate on the confidence.

    Args:
        x: (C, T) or (T,) audio.
        sample_rate: in Hz.
        hop: H, in samples.
        fmin: lowest pitch considered, in Hz (the tracker's range is 46.875-2093.75 Hz).
        fmax: highest pitch considered, in Hz.

    Returns:
        (f0_hz, confidence), each (F,) float32, F = T // hop.
    """
    x = _as_2d(x)
    n_frames = x.shape[1] // hop
    if n_frames == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    mono = x[0] if x.shape[0] == 1 else x.mean(axis=0, dtype=np.float32)
    if sample_rate != TRACKER_RATE:
        mono = soxr.resample(mono, sample_rate, TRACKER_RATE, quality="HQ")
        if mono.size == 0:  # a few samples at a high rate
            mono = np.zeros(1, np.float32)
    result = _tracker().detect(mono, TRACKER_RATE, fmin, fmax)
    pitch, conf = result.pitch_hz, result.confidence
    # position of each frame centre on the tracker's frame grid
    pos = (np.arange(n_frames) * hop + hop / 2) * (TRACKER_RATE / sample_rate / TRACKER_HOP)
    last = len(pitch) - 1
    j0 = np.clip(np.floor(pos).astype(np.int64), 0, last)
    j1 = np.minimum(j0 + 1, last)
    w = np.clip(pos - j0, 0.0, 1.0)
    out_conf = (1.0 - w) * conf[j0] + w * conf[j1]
    both = (conf[j0] >= VOICED_THRESHOLD) & (conf[j1] >= VOICED_THRESHOLD)
    log_f = (1.0 - w) * np.log(pitch[j0]) + w * np.log(pitch[j1])
    nearest = np.where(w < 0.5, pitch[j0], pitch[j1])
    out_f0 = np.where(both, np.exp(log_f), nearest)
    return out_f0.astype(np.float32), out_conf.astype(np.float32)


def compute_features(
    x: np.ndarray, sample_rate: int, hop: int, names: Iterable[str], n_mels: int = 64
) -> dict[str, np.ndarray]:
    """Compute the named features of a whole file, all on the same frame grid (see :data:`ALIGNMENT`).

    Loudness and mel share one STFT pass (both use :func:`default_n_fft`).

    Args:
        x: (C, T) audio.
        sample_rate: in Hz.
        hop: H, in samples.
        names: a subset of :data:`FEATURE_NAMES`.
        n_mels: mel bands, for "mel".

    Returns:
        float32 arrays with exactly F = T // hop frames: "loudness" (F,), "f0" (F,), "f0_confidence" (F,),
        "mel" (n_mels, F), for the names asked.
    """
    wanted = _check_names(names)
    x = _as_2d(x)
    if hop < 1:
        raise ValueError(f"hop must be >= 1, got {hop}")
    out: dict[str, np.ndarray] = {}
    n_fft = default_n_fft(sample_rate, hop)
    mats = []
    if "loudness" in wanted:
        mats.append(_loudness_weights(sample_rate, n_fft))
    if "mel" in wanted:
        mats.append(_mel_filters(sample_rate, n_fft, n_mels, 0.0, None))
    if mats:
        results = iter(_spectral(x, hop, n_fft, mats))
        if "loudness" in wanted:
            out["loudness"] = _power_db(next(results)[:, 0], -120.0)
        if "mel" in wanted:
            out["mel"] = _log_floor(next(results)).T.copy()
    if "f0" in wanted:
        out["f0"], out["f0_confidence"] = f0(x, sample_rate, hop)
    return out


def describe(names: Iterable[str], sample_rate: int, hop: int, n_mels: int = 64) -> dict[str, Any]:
    """A JSON-able description of :func:`compute_features` output, for the dataset manifest.

    Returns:
        ``{feature name: {...}}`` with, for each, the arrays it yields, shape, dtype, units, hop, frame rate,
        window/FFT size or tracker name and version, and the alignment sentence.
    """
    wanted = _check_names(names)
    n_fft = default_n_fft(sample_rate, hop)
    common = {"hop": hop, "frame_rate": sample_rate / hop, "sample_rate": sample_rate, "alignment": ALIGNMENT}
    stft = {"n_fft": n_fft, "window": "hann (periodic)", "padding": "zeros"}
    out: dict[str, Any] = {}
    if "loudness" in wanted:
        out["loudness"] = {
            "arrays": {"loudness": {"shape": "(F,)", "dtype": "float32"}},
            "units": "dB, A-weighted power relative to a full-scale 1 kHz sine (0 dB)",
            "weighting": "A (IEC 61672-1), applied in the power domain, mean over bins",
            "floor_db": -120.0,
            **stft,
            **common,
        }
    if "f0" in wanted:
        out["f0"] = {
            "arrays": {
                "f0": {"shape": "(F,)", "dtype": "float32", "units": "Hz"},
                "f0_confidence": {"shape": "(F,)", "dtype": "float32", "units": "0..1"},
            },
            "units": "Hz",
            "tracker": "swift-f0",
            "tracker_version": _swift_version(),
            "tracker_sample_rate": TRACKER_RATE,
            "tracker_hop_s": TRACKER_HOP / TRACKER_RATE,
            "fmin_hz": F0_MIN,
            "fmax_hz": F0_MAX,
            "voiced_threshold": VOICED_THRESHOLD,
            "interpolation": (
                "f0: log-frequency between voiced tracker frames, else nearest; confidence: linear"
            ),
            **common,
        }
    if "mel" in wanted:
        out["mel"] = {
            "arrays": {"mel": {"shape": f"({n_mels}, F)", "dtype": "float32"}},
            "units": "natural log of mel-filtered |X|^2, floored at 1e-10",
            "mel_scale": "slaney",
            "mel_norm": "slaney (area)",
            "n_mels": n_mels,
            "fmin_hz": 0.0,
            "fmax_hz": sample_rate / 2,
            **stft,
            **common,
        }
    return out


# --- internals ----------------------------------------------------------------------------------------------


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected (C, T) or (T,) audio, got shape {x.shape}")
    return x


def _check_names(names: Iterable[str]) -> set[str]:
    wanted = set([names] if isinstance(names, str) else names)
    unknown = wanted - set(FEATURE_NAMES)
    if unknown:
        raise ValueError(f"unknown feature(s) {sorted(unknown)}; choose from {list(FEATURE_NAMES)}")
    return wanted


def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic: peak at n/2


def _spectral(x: np.ndarray, hop: int, n_fft: int, mats: list[np.ndarray]) -> list[np.ndarray]:
    """Project each frame's power spectrum (channel mean) on each of ``mats`` ((n_bins,) or (n_bins, K)).

    Returns one (F, K) float32 array per matrix. Frames are processed in blocks to bound memory.
    """
    if hop < 1 or n_fft < 2:
        raise ValueError(f"need hop >= 1 and n_fft >= 2, got hop={hop}, n_fft={n_fft}")
    c, t = x.shape
    n_frames = t // hop
    mats = [m.reshape(m.shape[0], -1) for m in mats]
    proj = np.concatenate(mats, axis=1).astype(np.float32)  # one matmul for all outputs
    out = np.zeros((n_frames, proj.shape[1]), dtype=np.float32)
    window = _hann(n_fft)
    offset = hop // 2 - n_fft // 2  # frame i's window starts at sample i*hop + offset (centre i*hop + hop/2)
    per_block = max(1, (1 << 21) // n_fft)
    for i0 in range(0, n_frames, per_block):
        i1 = min(i0 + per_block, n_frames)
        s0, s1 = i0 * hop + offset, (i1 - 1) * hop + offset + n_fft
        seg = np.zeros((c, s1 - s0), dtype=np.float32)
        a, b = max(s0, 0), min(s1, t)
        if b > a:
            seg[:, a - s0 : b - s0] = x[:, a:b]
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft, axis=1)[:, ::hop]  # (C, Fb, n_fft)
        spec = scipy.fft.rfft(frames * window, axis=-1, workers=1)
        power = spec.real**2 + spec.imag**2  # (C, Fb, n_bins)
        out[i0:i1] = (power[0] if c == 1 else power.mean(axis=0)) @ proj
    bounds = np.cumsum([0] + [m.shape[1] for m in mats])
    return [out[:, lo:hi] for lo, hi in itertools.pairwise(bounds)]


def _loudness_weights(sample_rate: int, n_fft: int) -> np.ndarray:
    """A-weights per rfft bin, divided by the summed power of a full-scale sine (N * sum(w^2) / 4)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    window = _hann(n_fft).astype(np.float64)
    ref = n_fft * np.sum(window**2) / 4.0  # one-sided sum of |X|^2 for sin(2 pi f t), Parseval
    return 10.0 ** (a_weighting_db(freqs) / 10.0) / ref


def _power_db(p: np.ndarray, floor_db: float) -> np.ndarray:
    db = 10.0 * np.log10(np.maximum(p.astype(np.float64), 1e-300))
    return np.maximum(db, floor_db).astype(np.float32)


def _log_floor(m: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(m, _MEL_FLOOR)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def _mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """(n_bins, n_mels) triangular filters on the Slaney mel scale, Slaney area normalisation."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if n_mels < 1 or not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need n_mels >= 1 and 0 <= fmin < fmax <= sr/2, got {n_mels}, {fmin}, {fmax}")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))  # (n_mels, n_bins)
    return fb.T


def _tracker() -> Any:
    """The process's swift-f0 detector: one single-threaded ONNX session, created on first use (and again
    in a forked child, which must not share its parent's session)."""
    global _tracker_cache
    if _tracker_cache is None or _tracker_cache[0] != os.getpid():
        from swift_f0 import SwiftF0

        _tracker_cache = (os.getpid(), SwiftF0(threads=1, spin=False))
    return _tracker_cache[1]


def _swift_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("swift-f0")
    except PackageNotFoundError:
        return "not installed"
