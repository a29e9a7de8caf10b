"""acids_data.features: loudness calibration, frame alignment, mel bands, f0 accuracy and speed."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from acids_data.audio import load
from acids_data.features import (  # private: mel scale identities
    ALIGNMENT,
    F0_MAX,
    FEATURE_NAMES,
    _hz_to_mel,
    _mel_to_hz,
    a_weighting_db,
    compute_features,
    default_n_fft,
    describe,
    f0,
    log_mel,
    loudness,
)

CENTS = 50.0


def cents(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    return 1200 * np.abs(np.log2(np.asarray(a, np.float64) / b))


def centres(n_frames: int, hop: int, sr: int) -> np.ndarray:
    """Frame centre times in seconds, per the alignment contract."""
    return (np.arange(n_frames) * hop + hop / 2) / sr


# --- loudness -----------------------------------------------------------------------------------------------


def test_a_weighting_matches_iec_table():
    # IEC 61672-1 table: A-weighting (dB, rounded to 0.1) at the exact octave frequencies 1 kHz * 10**(k/10)
    table = [-39.4, -26.2, -16.1, -8.6, -3.2, 0.0, 1.2, 1.0, -1.1, -6.6]
    got = a_weighting_db(1000.0 * 10.0 ** (np.arange(-15, 15, 3) / 10))
    np.testing.assert_allclose(got, table, atol=0.051)
    assert a_weighting_db(np.array([1000.0]))[0] == pytest.approx(0.0, abs=1e-9)
    assert a_weighting_db(np.array([0.0]))[0] == -np.inf


@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_loudness_calibration(make_tone, sr):
    hop = 256

    def level(freq, amp=1.0):
        return float(np.median(loudness(make_tone(freq, sr, 1.0, amplitude=amp), sr, hop)))

    assert level(1000.0) == pytest.approx(0.0, abs=0.5)  # full-scale 1 kHz sine: the 0 dB reference
    assert level(1000.0, 0.1) == pytest.approx(-20.0, abs=0.5)  # -20 dBFS
    assert level(100.0) == pytest.approx(-19.1, abs=0.5)  # A-weighting, relative to 1 kHz
    if sr > 20000:
        assert level(10000.0) == pytest.approx(-2.5, abs=0.5)
    silence = loudness(np.zeros((2, sr)), sr, hop)
    assert np.all(silence == -120.0)
    assert np.all(loudness(np.zeros(sr), sr, hop, floor_db=-80.0) == -80.0)


def test_loudness_multichannel_averages_power(make_tone):
    s = make_tone(1000.0, 44100, 1.0, amplitude=1.0)[0]
    both = np.median(loudness(np.stack([s, s]), 44100, 512))
    one = np.median(loudness(np.stack([s, np.zeros_like(s)]), 44100, 512))
    anti = np.median(loudness(np.stack([s, -s]), 44100, 512))  # power, not amplitude: no cancellation
    assert both == pytest.approx(0.0, abs=0.05)
    assert one == pytest.approx(-3.01, abs=0.05)
    assert anti == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("hop", [64, 160, 441, 512, 2048])
@pytest.mark.parametrize("extra", [0, 1, -1, 7])
def test_frame_counts(hop, extra):
    sr = 16000
    rng = np.random.default_rng(hop)
    for n_hops in (0, 1, 3, 50):
        t = max(0, n_hops * hop + extra)
        x = rng.normal(0, 0.1, (2, t)).astype(np.float32)
        feats = compute_features(x, sr, hop, FEATURE_NAMES, n_mels=16)
        n = t // hop
        assert feats["loudness"].shape == (n,)
        assert feats["f0"].shape == feats["f0_confidence"].shape == (n,)
        assert feats["mel"].shape == (16, n)
        assert all(v.dtype == np.float32 for v in feats.values())


@pytest.mark.parametrize(("sr", "hop"), [(16000, 160), (44100, 512), (48000, 64), (44100, 441)])
def test_frame_timing_click(sr, hop):
    """A short burst at sample s is loudest in the frame whose window is centred nearest to s: s // H."""
    for s in (37 * hop + hop // 2, 37 * hop + 3, 37 * hop + hop - 3, 101 * hop):
        x = np.zeros(200 * hop, np.float32)
        x[s : s + 8] = 1.0
        lo = loudness(x, sr, hop)
        mel = log_mel(x, sr, hop, n_mels=8)
        assert abs(int(np.argmax(lo)) - s // hop) <= 1
        assert abs(int(np.argmax(mel.sum(axis=0))) - s // hop) <= 1
        if s % hop == hop // 2:  # exactly at a frame centre: exactly that frame
            assert int(np.argmax(lo)) == s // hop


def test_frame_timing_chunk_slicing(make_tone):
    """Whole-file features sliced at frame s // H equal the chunk's own features away from its edges."""
    sr, hop = 44100, 512
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (1, sr * 3)).astype(np.float32) * np.linspace(0, 1, sr * 3, dtype=np.float32)
    whole = loudness(x, sr, hop)
    s, length = 40 * hop, 100 * hop
    chunk = loudness(x[:, s : s + length], sr, hop)
    n_fft = default_n_fft(sr, hop)
    edge = n_fft // hop  # frames whose window reaches past the chunk
    np.testing.assert_allclose(
        chunk[edge:-edge], whole[s // hop : s // hop + length // hop][edge:-edge], atol=1e-3
    )


def test_loudness_onset_frame():
    """A tone starting at sample k*H: with a window of H samples, frame k is all tone and frame k-1 silent."""
    sr, hop, k = 44100, 512, 50
    x = np.zeros(100 * hop, np.float32)
    t = np.arange(50 * hop) / sr
    x[k * hop :] = np.sin(2 * np.pi * 1000 * t)
    lo = loudness(x, sr, hop, n_fft=hop)  # window = hop: frame i sees exactly [i*H, (i+1)*H)
    assert lo[k] == pytest.approx(0.0, abs=0.1)
    assert lo[k - 1] < -60
    assert lo[k + 1] == pytest.approx(0.0, abs=0.1)


# --- mel ----------------------------------------------------------------------------------------------------


def test_mel_scale_is_slaney():
    np.testing.assert_allclose(_hz_to_mel(np.array([0.0, 200.0, 1000.0, 6400.0])), [0, 3, 15, 42], atol=1e-9)
    f = np.array([50.0, 700.0, 1000.0, 3000.0, 11025.0])
    np.testing.assert_allclose(_mel_to_hz(_hz_to_mel(f)), f, rtol=1e-12)


@pytest.mark.parametrize("sr", [16000, 44100])
def test_log_mel_tone_lands_in_its_band(make_tone, sr):
    n_mels, hop = 64, 256
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(sr / 2), n_mels + 2))
    for freq in (200.0, 1000.0, 3000.0, 6000.0):
        m = log_mel(make_tone(freq, sr, 0.5), sr, hop, n_mels=n_mels)
        assert m.shape == (n_mels, (sr // 2) // hop) and m.dtype == np.float32
        assert np.isfinite(m).all()
        band = int(np.argmax(np.median(m, axis=1)))
        assert abs(band - int(np.argmin(np.abs(edges[1:-1] - freq)))) <= 1
    quiet = log_mel(np.zeros(sr), sr, hop, n_mels=n_mels)
    assert np.all(quiet == np.float32(np.log(1e-10)))


def test_compute_features_consistent_and_described(make_tone):
    sr, hop = 22050, 256
    x = make_tone([220.0, 330.0], sr, 1.0)
    feats = compute_features(x, sr, hop, ["loudness", "mel", "f0"], n_mels=32)
    assert set(feats) == {"loudness", "mel", "f0", "f0_confidence"}
    np.testing.assert_allclose(feats["loudness"], loudness(x, sr, hop), atol=1e-5)
    np.testing.assert_allclose(feats["mel"], log_mel(x, sr, hop, n_mels=32), atol=1e-5)
    assert set(compute_features(x, sr, hop, ["loudness"])) == {"loudness"}
    with pytest.raises(ValueError, match="unknown feature"):
        compute_features(x, sr, hop, ["pitch"])

    d = describe(FEATURE_NAMES, sr, hop, 32)
    json.dumps(d)
    assert set(d) == set(FEATURE_NAMES)
    for v in d.values():
        assert v["hop"] == hop and v["frame_rate"] == sr / hop and v["alignment"] == ALIGNMENT
    assert d["f0"]["tracker"] == "swift-f0" and d["f0"]["tracker_version"].startswith("0.3")
    assert d["loudness"]["n_fft"] == d["mel"]["n_fft"] == default_n_fft(sr, hop) == 1024


def test_default_n_fft():
    assert [default_n_fft(sr, 256) for sr in (8000, 16000, 22050, 44100, 48000, 96000)] == [
        512, 1024, 1024, 2048, 2048, 4096,
    ]  # fmt: skip
    assert default_n_fft(44100, 4096) == 4096


# --- f0 -----------------------------------------------------------------------------------------------------


def _harmonic(freq_of_t: np.ndarray, sr: int) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(freq_of_t) / sr
    return (0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.05 * np.sin(3 * phase)).astype(np.float32)


@pytest.mark.parametrize(("sr", "hop"), [(16000, 160), (44100, 512), (48000, 64)])
def test_f0_timing_at_pitch_switch(sr, hop):
    """220 -> 330 Hz at sample s: the first frame above their geometric mean is the first centred after s,
    within one tracker frame."""
    s = int(1.5 * sr) + 37
    fr = np.where(np.arange(3 * sr) < s, 220.0, 330.0)
    f, c = f0(_harmonic(fr, sr), sr, hop)
    assert f.shape == c.shape == (3 * sr // hop,)
    first = int(np.nonzero(f > np.sqrt(220 * 330))[0][0])
    expected = int(np.ceil((s - hop / 2) / hop))  # the first frame centred at or after s
    tol = max(1, round(0.016 * sr / hop))  # one tracker frame (16 ms), in our frames
    assert abs(first - expected) <= tol, (first, expected)
    margin = round(0.2 * sr / hop)
    assert np.median(cents(f[margin : expected - margin], 220.0)) < 10
    assert np.median(cents(f[expected + margin : -margin], 330.0)) < 10
    assert np.all(c[margin : expected - margin] > 0.5) and np.all(c[expected + margin : -margin] > 0.5)


def test_f0_silence_is_unvoiced():
    f, c = f0(np.zeros((1, 16000), np.float32), 16000, 160)
    assert np.all(c < 0.5) and np.all(f > 0)
    f, c = f0(np.zeros((2, 5), np.float32), 192000, 4)  # less than one sample at 16 kHz
    assert f.shape == c.shape == (1,)


def _notes(shared_data: Path) -> list[dict]:
    with open(shared_data / "notes" / "notes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _in_range(r: dict) -> bool:
    return float(r["f0_hz"]) <= F0_MAX  # violin MIDI 97-100 lie above what the tracker can report


def _stratified(rows: list[dict], per_band: int) -> list[dict]:
    """Per instrument, `per_band` notes from each third (low/mid/high) of its range, velocities rotating."""
    chosen = []
    for inst in sorted({r["instrument"] for r in rows}):
        notes = sorted(
            (r for r in rows if r["instrument"] == inst), key=lambda r: (int(r["midi_pitch"]), r["velocity"])
        )
        for band in np.array_split(np.arange(len(notes)), 3):
            for j in np.linspace(0, len(band) - 1, per_band).round().astype(int):
                chosen.append(notes[band[j]])
    return chosen


def _rpa(shared_data: Path, rows: list[dict], hop_s: float = 0.01) -> tuple[float, int, list[str]]:
    """Raw pitch accuracy over frames of the held note (0.1 s after note-on to note-off) whose loudness is
    within 30 dB of the note's loudest frame and above -70 dB."""
    good = total = 0
    worst = []
    for r in rows:
        sr = int(r["sample_rate"])
        hop = round(hop_s * sr)
        x = load(shared_data / r["file"], sr)
        f, _ = f0(x, sr, hop)
        lo = loudness(x, sr, hop)
        t = centres(len(f), hop, sr)
        m = (
            (t >= float(r["note_on_s"]) + 0.1)
            & (t <= float(r["note_off_s"]))
            & (lo > max(lo.max() - 30, -70))
        )
        ok = cents(f[m], float(r["f0_hz"])) < CENTS
        good, total = good + int(ok.sum()), total + int(m.sum())
        if ok.mean() < 0.5:
            worst.append(f"{r['file']} ({ok.mean():.2f})")
    return good / total, total, worst


def test_f0_accuracy_on_real_notes(shared_data, report):
    rows = [r for r in _notes(shared_data) if _in_range(r)]
    subset = _stratified([r for r in rows if r["sample_rate"] == "16000"], per_band=5)
    subset += _stratified([r for r in rows if r["sample_rate"] == "48000"], per_band=1)
    assert len(subset) == 90 and len({r["instrument"] for r in subset}) == 5
    rpa, frames, worst = _rpa(shared_data, subset)
    report(f"f0 RPA on {len(subset)} notes: {rpa:.4f} over {frames} frames; failing notes: {worst}")
    assert rpa >= 0.95


@pytest.mark.slow
def test_f0_accuracy_on_all_notes(shared_data, report):
    rows = [r for r in _notes(shared_data) if _in_range(r)]
    for rate in ("16000", "48000"):
        rpa, frames, worst = _rpa(shared_data, [r for r in rows if r["sample_rate"] == rate])
        report(f"f0 RPA, all notes at {rate} Hz: {rpa:.4f} over {frames} frames; failing: {worst}")
        assert rpa >= 0.95


def test_f0_above_tracker_range_is_unvoiced(shared_data):
    """Notes above 2093.75 Hz cannot be tracked; the tracker must say so (low confidence), not guess."""
    rows = [r for r in _notes(shared_data) if not _in_range(r) and r["sample_rate"] == "16000"]
    assert rows
    for r in rows[:3]:
        x = load(shared_data / r["file"], 16000)
        _, c = f0(x, 16000, 160)
        assert np.mean(c[10:300]) < 0.5, r["file"]


@pytest.mark.parametrize(("inst", "sr"), [("cello", 48000), ("flute", 16000)])
def test_f0_accuracy_on_phrases(shared_data, report, inst, sr):
    """20 s of legato phrases against the 100 Hz MIDI ground truth (gate on).

    Nearly all errors sit in the ~100 ms after a note change, where the previous note's release still sounds
    and the MIDI reference has already jumped; frames outside those transitions must reach RPA 0.9. All
    gated frames together reach about 0.82 (cello) / 0.87 (flute): that figure is reported, and only
    guarded against regression.
    """
    ref = np.loadtxt(shared_data / "phrases" / f"{inst}_f0.csv", delimiter=",", skiprows=1)  # 100 Hz rows
    hop = sr // 100
    x = load(shared_data / "phrases" / str(sr) / f"{inst}_phrases.flac", sr)[:, : 20 * sr]
    f, _ = f0(x, sr, hop)
    n = len(f)
    assert n == 2000
    # frame i is centred at 10 ms * i + 5 ms, between reference rows i and i + 1
    a, b = ref[:n], ref[1 : n + 1]
    voiced = (a[:, 2] > 0) & (b[:, 2] > 0)
    err = cents(f, np.sqrt(np.where(voiced, a[:, 1] * b[:, 1], 1.0)))
    note_start = np.r_[False, np.diff(ref[:, 3]) != 0][: n + 1]  # row j starts a new note
    transition = np.convolve(note_start, np.ones(11))[1 : n + 1] > 0  # a change in rows i-9 .. i+1
    steady = voiced & ~transition
    rpa_all, rpa_steady = (err[voiced] < CENTS).mean(), (err[steady] < CENTS).mean()
    report(
        f"f0 RPA on 20 s of {inst} @ {sr}: all gated frames {rpa_all:.3f} ({voiced.sum()}), "
        f"outside transitions {rpa_steady:.3f} ({steady.sum()})"
    )
    assert rpa_steady >= 0.9
    assert rpa_all >= 0.78


def test_f0_speed(shared_data, report):
    """>= 50x real time on one core (process CPU time), 48 kHz input including the resampling to 16 kHz."""
    x = load(shared_data / "phrases" / "48000" / "trumpet_phrases.flac", 48000)[:, : 60 * 48000]
    assert x.shape[1] == 60 * 48000
    f0(x[:, :48000], 48000, 480)  # create the ONNX session outside the measurement
    t0 = time.process_time()
    f0(x, 48000, 480)
    cpu = time.process_time() - t0
    speed = 60.0 / cpu
    report(f"f0: {speed:.0f}x real time on one core ({cpu:.2f} CPU-s for 60 s at 48 kHz)")
    assert speed >= 50
