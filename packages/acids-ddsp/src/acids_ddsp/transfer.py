"""Timbre transfer: feature statistics of a training set, and the automatic adjustments of new features.

Statistics (stored in training checkpoints as ``payload["stats"]``): mean MIDI pitch and loudness quantiles
over voiced frames (f0 confidence >= 0.5). Adjustments (magenta's timbre-transfer recipe, simplified):
octave shift of f0 toward the training mean pitch, loudness quantile matching on voiced frames, attenuation
of unvoiced frames, then the manual pitch (semitones) and loudness (dB) shifts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

VOICED = 0.5
N_QUANTILES = 101


def _midi(f0: np.ndarray) -> np.ndarray:
    return 12.0 * np.log2(np.maximum(f0, 1e-3) / 440.0) + 69.0


def feature_stats(items: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Statistics of feature dicts (f0, f0_confidence, loudness arrays) over their voiced frames."""
    pitches, louds = [], []
    for it in items:
        voiced = np.asarray(it["f0_confidence"]) >= VOICED
        pitches.append(_midi(np.asarray(it["f0"])[voiced]))
        louds.append(np.asarray(it["loudness"])[voiced])
    p, ld = np.concatenate(pitches or [np.zeros(0)]), np.concatenate(louds or [np.zeros(0)])
    if p.size == 0:
        return {}
    qs = np.linspace(0.0, 1.0, N_QUANTILES)
    return {
        "voiced_frames": int(p.size),
        "pitch_midi_mean": float(p.mean()),
        "loudness_quantiles": [float(v) for v in np.quantile(ld, qs)],
    }


def adjust(
    f0: np.ndarray,
    confidence: np.ndarray,
    loudness: np.ndarray,
    stats: dict[str, Any] | None,
    *,
    auto: bool = True,
    pitch_shift: float = 0.0,
    loudness_shift: float = 0.0,
    quiet_db: float = 20.0,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Adjusted (f0, loudness) for a model trained with ``stats``, and what was done.

    Args:
        f0, confidence, loudness: (F,) features of the input.
        stats: :func:`feature_stats` of the training set (None or {} disables the automatic part).
        auto: apply the octave shift, loudness matching and unvoiced attenuation.
        pitch_shift: semitones added after the automatic shift.
        loudness_shift: dB added at the end.
        quiet_db: attenuation of unvoiced frames.
    """
    f0 = np.asarray(f0, np.float64).copy()
    loudness = np.asarray(loudness, np.float64).copy()
    voiced = np.asarray(confidence) >= VOICED
    done = {"octaves": 0.0, "pitch_shift": float(pitch_shift), "loudness_shift": float(loudness_shift)}
    if auto and stats and voiced.any():
        shift = (stats["pitch_midi_mean"] - _midi(f0[voiced]).mean()) / 12.0
        octaves = float(np.round(shift)) + 0.0  # + 0.0: report 0, not -0
        f0 *= 2.0**octaves
        done["octaves"] = octaves
        qs = np.linspace(0.0, 1.0, N_QUANTILES)
        src = np.quantile(loudness[voiced], qs)
        dst = np.asarray(stats["loudness_quantiles"])
        # map each voiced frame through its quantile in the input to the same quantile of the training set
        loudness[voiced] = np.interp(loudness[voiced], src + np.arange(qs.size) * 1e-9, dst)
        loudness[~voiced] -= quiet_db
    f0 *= 2.0 ** (pitch_shift / 12.0)
    loudness += loudness_shift
    return f0.astype(np.float32), loudness.astype(np.float32), done
