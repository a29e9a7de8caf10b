"""Real-audio inputs for ``check``: audio at the model's rate, control features, and real-time factor timing.

Each method of an artifact is run on inputs made from one stretch of real audio, in this order of preference:

1. the exportable's own ``example_inputs(audio, sample_rate) -> {method: tensor}`` hook (optional, see
   :mod:`acids_export.registry`), called on the eager module with mono float32 audio at the model's rate;
2. control features declared per input channel in the io spec (``"inputs": ["f0_hz", "loudness_db"]``) or,
   when none are declared, read from the channel labels (``"(signal) f0 in Hz"``): computed from the audio
   with :mod:`acids_data.features` at the method's ``in_ratio`` (one frame per ``in_ratio`` samples);
3. the audio itself for an audio-rate method (``in_ratio == 1``);
4. the eager output of an audio-rate method producing the input (``decode`` gets ``encode``'s latents);
5. seeded noise, as a last resort, named as such in the figures (``inputs``).

Timing (:func:`time_calls`) warms each runtime up first (TorchScript's profiling executor optimises the
graph on the first calls, onnxruntime allocates its arenas), then reports the median of many buffers.
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from acids_core.errors import DataError, MissingInput
from acids_export.registry import CONTROL_FEATURES, ExportSpec, MethodSpec

log = logging.getLogger(__name__)

#: channel label patterns -> control feature (first match wins; a method is "controls" only if all match)
_LABEL_FEATURES = (
    (re.compile(r"\b(f0|pitch)\b.*\bconfidence|\bvoic", re.IGNORECASE), "f0_confidence"),
    (re.compile(r"\b(f0|pitch)\b", re.IGNORECASE), "f0_hz"),
    (re.compile(r"\bloudness\b", re.IGNORECASE), "loudness_db"),
)

DEFAULT_WARMUP = 5
DEFAULT_RTF_CALLS = 24


# ----------------------------------------------------------------------------------------------- audio


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Mono float32 ``x`` from ``sr_in`` to ``sr_out``: soxr (HQ) when installed, else band-limited FFT."""
    if sr_in == sr_out or x.size == 0:
        return x.astype(np.float32, copy=False)
    try:
        import soxr
    except ImportError:
        n_out = max(1, round(x.size * sr_out / sr_in))
        spec = np.fft.rfft(x.astype(np.float64))
        keep = min(spec.size, n_out // 2 + 1)
        out = np.fft.irfft(spec[:keep], n_out) * (n_out / x.size)
        return out.astype(np.float32)
    return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def synthetic(frames: int, sample_rate: int) -> np.ndarray:
    """A harmonic tone with a slow glide and a swell (only when no real audio is found)."""
    t = np.arange(frames) / float(sample_rate)
    f0 = 220.0 * 2 ** (0.5 * np.sin(2 * np.pi * 0.25 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    env = 0.5 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    sig = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8) if k * 440 < sample_rate / 2)
    return (env * sig).astype(np.float32)


def load_audio(
    path: str | None, frames: int, sample_rate: int | None = None, offset_s: float = 1.0
) -> tuple[np.ndarray, str]:
    """``frames`` mono float32 samples of real audio at ``sample_rate`` (the file's rate when None).

    Reads from ``offset_s`` into the file when it is long enough, resamples, and loops a short file.
    Returns the samples and the file's absolute path (``"synthetic"`` when ``path`` is None).
    """
    if path is None:
        log.warning("no real audio found (--audio or $ACIDS_EXPORT_AUDIO): using a synthetic harmonic signal")
        return synthetic(frames, sample_rate or 44100), "synthetic"
    import soundfile as sf

    if not os.path.exists(path):
        raise MissingInput(f"{path}: no such audio file")
    try:
        info = sf.info(path)
        sr_in = int(info.samplerate)
        need = frames if sample_rate in (None, sr_in) else math.ceil(frames * sr_in / sample_rate) + 64
        start = int(offset_s * sr_in) if info.frames >= need + offset_s * sr_in else 0
        data, _ = sf.read(path, start=start, frames=need, dtype="float32", always_2d=True)
    except RuntimeError as e:
        raise DataError(f"{path}: unreadable audio ({e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: no audio samples")
    mono = data.mean(axis=1).astype(np.float32)
    if sample_rate is not None:
        mono = resample(mono, sr_in, sample_rate)
    if len(mono) < frames:
        mono = np.tile(mono, frames // max(len(mono), 1) + 1)
    return np.ascontiguousarray(mono[:frames], dtype=np.float32), os.path.abspath(path)


# ------------------------------------------------------------------------------------ control features


def channel_features(m: MethodSpec) -> tuple[str, ...] | None:
    """The control feature of each input channel of ``m`` (declared, else from its labels), or None."""
    if m.input_features:
        return m.input_features
    if m.in_ratio == 1 or len(m.input_labels) != m.in_channels:
        return None
    found = []
    for label in m.input_labels:
        kind = next((k for pattern, k in _LABEL_FEATURES if pattern.search(label)), None)
        if kind is None:
            return None
        found.append(kind)
    return tuple(found)


def control_inputs(features: Sequence[str], audio: np.ndarray, sample_rate: int, hop: int) -> torch.Tensor:
    """``(1, len(features), len(audio) // hop)`` frames of ``features`` computed from ``audio``.

    ``f0_hz`` / ``f0_confidence``: :func:`acids_data.features.f0` (swift-f0); ``loudness_db``:
    :func:`acids_data.features.loudness` (A-weighted dB re a full-scale sine); ``audio``: one sample per hop,
    the last of each (what nn~ hands a method with ``in_ratio > 1``). Frame i covers samples
    ``[i * hop, (i + 1) * hop)`` (acids-data's alignment).
    """
    unknown = [f for f in features if f not in CONTROL_FEATURES]
    if unknown:
        raise DataError(f"unknown control feature(s) {unknown}; known: {list(CONTROL_FEATURES)}")
    try:
        from acids_data import features as feats
    except ImportError:
        raise DataError(
            f"the model takes control inputs ({', '.join(features)}): computing them from real audio needs "
            "acids-data (pip install acids-data)"
        ) from None
    n = len(audio) // hop
    x = audio[: n * hop]
    rows: dict[str, np.ndarray] = {}
    if {"f0_hz", "f0_confidence"} & set(features):
        rows["f0_hz"], rows["f0_confidence"] = feats.f0(x, sample_rate, hop)
    if "loudness_db" in features:
        rows["loudness_db"] = feats.loudness(x, sample_rate, hop)
    if "audio" in features:
        rows["audio"] = x.reshape(n, hop)[:, -1]
    out = np.stack([rows[f][:n] for f in features]).astype(np.float32)
    return torch.from_numpy(out)[None]


def _call(module: Any, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return module if name == "forward" else getattr(module, name)


def _from_hook(module: Any, spec: ExportSpec, audio: np.ndarray) -> dict[str, torch.Tensor]:
    """The exportable's ``example_inputs`` (validated against the declared shapes), or {}."""
    hook = getattr(module, "example_inputs", None)
    if module is None or not callable(hook):
        return {}
    try:
        given = hook(audio, spec.sample_rate)
    except (DataError, MissingInput):
        raise
    except Exception as e:
        raise DataError(f"the exportable's example_inputs() failed: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(given, dict):
        raise DataError(f"example_inputs() returned {type(given).__name__}, not a dict of tensors per method")
    out = {}
    names = {m.name for m in spec.methods}
    for name, x in given.items():
        if str(name) not in names:  # a method this artifact does not have
            continue
        m = spec.method(str(name))
        x = torch.as_tensor(x, dtype=torch.float32)
        frames = len(audio) // m.in_ratio
        if x.dim() == 2:
            x = x[None]
        if tuple(x.shape[:2]) != (1, m.in_channels) or x.shape[-1] < frames:
            raise DataError(
                f"example_inputs()['{m.name}'] is {tuple(x.shape)}, expected (1, {m.in_channels}, {frames})"
            )
        out[m.name] = x[..., :frames].contiguous()
    return out


def method_inputs(
    spec: ExportSpec, audio: np.ndarray, eager_offline: Any = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One ``(1, in_ch, len(audio) / in_ratio)`` input per method, and how each was made (module docstring).

    ``audio`` is mono float32 at ``spec.sample_rate``; ``eager_offline`` the eager module (or None).
    """
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]
    inputs = _from_hook(eager_offline, spec, audio)
    sources = dict.fromkeys(inputs, "example_inputs")
    for m in spec.methods:
        if m.name in inputs:
            continue
        features = channel_features(m)
        if features is not None:
            inputs[m.name] = control_inputs(features, audio, spec.sample_rate, m.in_ratio)
            sources[m.name] = f"features {','.join(features)} (acids_data.features, hop {m.in_ratio})"
            continue
        if m.in_ratio == 1:
            inputs[m.name] = x.repeat(1, m.in_channels, 1)
            sources[m.name] = "audio"
            continue
        producer = next(
            (
                p
                for p in spec.methods
                if p.in_ratio == 1 and (p.out_channels, p.out_ratio) == (m.in_channels, m.in_ratio)
            ),
            None,
        )
        if producer is not None and eager_offline is not None:
            with torch.no_grad():
                inputs[m.name] = _call(eager_offline, producer.name)(x.repeat(1, producer.in_channels, 1))
            sources[m.name] = f"{producer.name}(audio) (eager)"
        else:
            log.warning("%s: no way to make real inputs for it: seeded noise", m.name)
            gen = torch.Generator().manual_seed(0)
            inputs[m.name] = torch.randn(1, m.in_channels, len(audio) // m.in_ratio, generator=gen)
            sources[m.name] = "noise (seeded)"
    return inputs, sources


# ------------------------------------------------------------------------------------------------ timing


def time_calls(
    fn: Callable[[torch.Tensor], Any],
    blocks: Sequence[torch.Tensor],
    budget_s: float,
    *,
    warmup: int = DEFAULT_WARMUP,
    calls: int = DEFAULT_RTF_CALLS,
    max_seconds: float = 5.0,
) -> dict[str, Any]:
    """Real-time factor of ``fn`` on consecutive ``blocks`` (each ``budget_s`` seconds of audio).

    The first ``warmup`` calls are not timed (the first one is reported alone as ``first_call_rtf``: the
    outlier warm-up removes); then ``calls`` calls are timed (fewer, but at least 8, when they would take
    more than ``max_seconds``). ``rtf`` is the median, ``rtf_p90`` the 90th percentile.
    """
    if not blocks:
        raise ValueError("no blocks to time")
    first = 0.0
    i = 0
    with torch.inference_mode():
        for i in range(max(warmup, 1)):
            t = time.perf_counter()
            fn(blocks[i % len(blocks)])
            if i == 0:
                first = time.perf_counter() - t
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max(calls, 1):
            i += 1
            t = time.perf_counter()
            fn(blocks[i % len(blocks)])
            times.append(time.perf_counter() - t)
            if len(times) >= 8 and time.perf_counter() - start > max_seconds:
                break
    ordered = sorted(times)
    return {
        "rtf": statistics.median(times) / budget_s,
        "rtf_p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] / budget_s,
        "first_call_rtf": first / budget_s,
        "warmup_calls": max(warmup, 1),
        "timed_calls": len(times),
    }
