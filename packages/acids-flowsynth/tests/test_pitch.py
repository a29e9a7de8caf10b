"""Pitch tracking and the duration-preserving shift to C4 on real instrument notes (shared/data)."""

import csv

import numpy as np
import pytest

from acids_flowsynth.pitch import hz_of, midi_of, note_pitch, shift_pitch, time_stretch

SR = 22050
NOTES = ["violin_055_080", "flute_072_080", "trumpet_062_120", "alto_sax_049_080", "cello_048_080"]


def _note(shared_data, name):
    from acids_data.audio import load

    rows = {r["file"]: r for r in csv.DictReader((shared_data / "notes" / "notes.csv").open())}
    row = rows[f"notes/16000/{name}.flac"]
    return load(shared_data / row["file"], SR, 1)[0][: 4 * SR], float(row["f0_measured_hz"])


def test_note_pitch_matches_the_measured_f0(shared_data):
    for name in NOTES:
        x, f0 = _note(shared_data, name)
        got = note_pitch(x, SR)
        assert got is not None and abs(1200 * np.log2(got / f0)) < 30, (name, got, f0)


def test_shift_to_c4_keeps_length_and_envelope(shared_data):
    for name in NOTES[:3]:
        x, f0 = _note(shared_data, name)
        y = shift_pitch(x, SR, 60.0 - midi_of(f0))
        assert y.shape == x.shape and y.dtype == np.float32
        assert abs(midi_of(note_pitch(y, SR)) - 60.0) < 0.15, name
        # the amplitude envelope (50 ms RMS) is kept: same onset, same release at 3 s
        env = [np.sqrt(np.mean(a[: len(a) // 1102 * 1102].reshape(-1, 1102) ** 2, axis=1)) for a in (x, y)]
        assert np.corrcoef(env[0], env[1])[0, 1] > 0.9, name
        assert env[1][64:].max() < 0.1 * env[1][:56].max()  # silent after the release, as the input


def test_unpitched_sound_has_no_pitch_and_stretch_keeps_a_tone():
    rng = np.random.default_rng(0)
    assert note_pitch(rng.standard_normal(2 * SR).astype(np.float32) * 0.1, SR) is None
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    long = time_stretch(tone, 1.5)
    assert len(long) == round(1.5 * SR)
    assert note_pitch(long, SR) == pytest.approx(440.0, rel=0.005)
    assert hz_of(midi_of(330.0)) == pytest.approx(330.0)
