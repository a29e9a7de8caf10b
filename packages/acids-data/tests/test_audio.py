"""acids_data.audio: decoding, channel mapping, soxr resampling and bad-file handling, on real files."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import soxr

from acids_core.errors import DataError, Exit
from acids_data.audio import (
    SUPPORTED_EXTENSIONS,
    AudioFileError,
    AudioInfo,
    load,
    map_channels,
    probe,
    resample,
)

OUT_SR = 44100


def peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency of the strongest spectral peak of a 1-D signal (Hann window, parabolic interpolation)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-20)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(x)


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-30)


# (extension, subtype, lossy): the decode matrix
LOSSLESS = [
    ("wav", "PCM_16"),
    ("wav", "FLOAT"),
    ("flac", "PCM_24"),
    ("aiff", "PCM_16"),
]
LOSSY = [("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]
RATES = [8000, 22050, 44100, 48000, 96000]


def _cases():
    for ext, sub in LOSSLESS:
        for sr in RATES:
            for ch in (1, 2, 6):
                yield pytest.param(ext, sub, sr, ch, False, id=f"{ext}-{sub}-{sr}-{ch}ch")
    for ext, sub in LOSSY:
        for sr in (8000, 22050, 44100, 48000, 96000):
            for ch in (1, 2, 6):
                if ext == "mp3" and (sr > 48000 or ch > 2):  # MPEG-1/2 audio limits
                    continue
                yield pytest.param(ext, sub, sr, ch, True, id=f"{ext}-{sr}-{ch}ch")


@pytest.mark.parametrize(("ext", "subtype", "sr", "ch", "lossy"), list(_cases()))
def test_decode_round_trip(write_audio, make_tone, ext, subtype, sr, ch, lossy):
    # one distinct sine per channel, all below the lowest Nyquist (4 kHz); in 5.1 the sixth channel is the
    # LFE, which Vorbis low-passes, so it gets a bass tone
    freqs = [440.0 * 1.25**k for k in range(ch)]
    if ch == 6:
        freqs[5] = 110.0
    seconds = 1.0
    path = write_audio(f"x.{ext}", make_tone(freqs, sr, seconds), sr, subtype=subtype)

    info = probe(path)
    assert (info.sample_rate, info.channels) == (sr, ch)
    x = load(path, OUT_SR, channels=None)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape[0] == ch
    expected_len = seconds * OUT_SR
    # lossless: exact up to soxr rounding; lossy: the codec may pad or trim a few ms
    assert abs(x.shape[1] - expected_len) <= (0.05 * expected_len if lossy else 1)
    mid = x[:, OUT_SR // 10 : -OUT_SR // 10]  # away from the edges (codec priming, filter ringing)
    for k, f in enumerate(freqs):
        assert peak_hz(mid[k], OUT_SR) == pytest.approx(f, abs=0.5 if not lossy else 2.0)
        # amplitude 0.5 -> RMS -9.03 dB; Vorbis codes the LFE coarsely (+1.6 dB measured at 44.1 kHz)
        tol = 0.05 if not lossy else 2.5 if k == 5 else 1.0
        assert rms_db(mid[k]) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=tol)

    mono = load(path, OUT_SR, channels=1)
    assert mono.shape == (1, x.shape[1])
    np.testing.assert_allclose(mono[0], x.mean(axis=0), atol=1e-5 if not lossy else 1e-4)
    stereo = load(path, OUT_SR, channels=2)
    np.testing.assert_allclose(stereo, map_channels(x, 2), atol=1e-5 if not lossy else 1e-4)


def test_mono_mix_is_mean_not_left(write_audio, make_tone):
    s = make_tone(440, 48000, 0.5)[0]
    path = write_audio("anti.flac", np.stack([s, -s]), 48000, subtype="PCM_24")
    mono = load(path, OUT_SR, channels=1)
    assert rms_db(mono) < -100  # L + R cancel; RAVE's "left channel" would read -9 dB
    left = load(path, OUT_SR, channels=None)[0]
    assert rms_db(left) == pytest.approx(-9.03, abs=0.05)


def test_same_rate_is_exact(write_audio):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(2, 30001), dtype=np.int16)
    path = write_audio("pcm.wav", pcm, 22050, subtype="PCM_16")
    x = load(path, 22050, channels=None, block_frames=4096)
    np.testing.assert_array_equal(x, pcm.astype(np.float32) / 32768)


def test_streaming_equals_one_shot(shared_data):
    """Block-by-block decode + ResampleStream == whole-file soxr.resample, on a long real recording."""
    path = shared_data / "phrases" / "48000" / "violin_phrases.flac"
    ref = soxr.resample(sf.read(path, dtype="float32", always_2d=True)[0], 48000, OUT_SR, quality="HQ").T
    assert ref.shape[1] > 60 * OUT_SR
    for block in (1 << 18, 10007):  # the default, and an odd size that splits everywhere
        x = load(path, OUT_SR, channels=None, block_frames=block)
        assert x.shape == ref.shape
        np.testing.assert_allclose(x, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resample(sf.read(path, dtype="float32")[0], 48000, OUT_SR), ref[0], atol=1e-6)


@pytest.mark.parametrize("via", ["resample", "load"])
def test_anti_aliasing(write_audio, make_tone, via):
    """A full-scale tone 2 % above the new Nyquist (48k -> 16k) is attenuated by more than 100 dB."""
    x = make_tone(8160.0, 48000, 2.0, amplitude=1.0)
    if via == "resample":
        y = resample(x, 48000, 16000)
    else:
        y = load(write_audio("hf.wav", x, 48000, subtype="FLOAT"), 16000, block_frames=5000)
    assert y.shape == (1, 32000)
    attenuation = rms_db(x) - rms_db(y[:, 1600:-1600])
    assert attenuation > 100, attenuation
    # and an in-band tone passes unchanged
    z = resample(make_tone(1000.0, 48000, 2.0, amplitude=1.0), 48000, 16000)
    assert rms_db(z[:, 1600:-1600]) == pytest.approx(rms_db(x), abs=0.01)


@pytest.mark.parametrize("sr_in", [8000, 11025, 22050, 44100, 48000, 88200, 96000, 192000])
def test_resample_rates(make_tone, sr_in):
    x = make_tone([440.0, 1000.0], sr_in, 1.0)
    y = resample(x, sr_in, OUT_SR)
    assert y.shape == (2, OUT_SR) and y.dtype == np.float32
    assert peak_hz(y[1, 4410:-4410], OUT_SR) == pytest.approx(1000.0, abs=0.2)
    assert resample(x[0], sr_in, OUT_SR).shape == (OUT_SR,)


def test_map_channels():
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    assert map_channels(x, None) is x
    assert map_channels(x, 6) is x
    np.testing.assert_allclose(map_channels(x, 1), x.mean(axis=0, keepdims=True))
    np.testing.assert_array_equal(map_channels(x, 2), x[:2])  # fewer: the first N
    np.testing.assert_array_equal(map_channels(x[:1], 3), np.repeat(x[:1], 3, axis=0))  # mono: repeated
    np.testing.assert_array_equal(map_channels(x[:2], 5), x[[0, 1, 0, 1, 0]])  # more: cyclic
    np.testing.assert_allclose(map_channels(x[:2], 1)[0], (x[0] + x[1]) / 2)
    with pytest.raises(ValueError):
        map_channels(x, 0)


def test_six_channel_file_to_stereo_takes_first_two(write_audio, make_tone):
    freqs = [300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0]
    x = load(write_audio("six.flac", make_tone(freqs, 48000, 1.0), 48000), OUT_SR, channels=2)
    assert x.shape[0] == 2
    assert [round(peak_hz(c[4410:-4410], OUT_SR)) for c in x] == [300, 500]


def test_probe_info(write_audio, make_tone):
    info = probe(write_audio("a.flac", make_tone([440.0, 550.0], 22050, 1.5), 22050, subtype="PCM_16"))
    assert info == AudioInfo(22050, 2, 33075, "FLAC", "PCM_16")
    assert info.duration == pytest.approx(1.5)
    assert SUPPORTED_EXTENSIONS >= {".wav", ".flac", ".ogg", ".mp3", ".aiff"}
    assert all(e == e.lower() and e.startswith(".") for e in SUPPORTED_EXTENSIONS)


# --- bad input ----------------------------------------------------------------------------------------------


def _wav_bytes(tmp_path, frames=4800, subtype="PCM_16") -> bytes:
    p = tmp_path / "src.wav"
    sf.write(p, np.zeros((frames, 2), np.float32), 48000, subtype=subtype)
    return p.read_bytes()


def _bad_file(kind: str, tmp_path):
    """Create one kind of unusable file; returns its path."""
    if kind == "empty":
        p = tmp_path / "empty.wav"
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.wav"
        p.write_text("these are not samples\n" * 20)
    elif kind == "html":
        p = tmp_path / "download.mp3"
        p.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    elif kind == "truncated_header":
        p = tmp_path / "cut.wav"
        p.write_bytes(_wav_bytes(tmp_path)[:30])
    elif kind == "header_only":
        p = tmp_path / "header.wav"
        p.write_bytes(_wav_bytes(tmp_path)[:44])
    elif kind == "garbage_mp3":
        p = tmp_path / "garbage.mp3"
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "garbage_flac":
        p = tmp_path / "garbage.flac"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated_flac":
        src = tmp_path / "src.flac"
        sf.write(src, np.random.default_rng(0).uniform(-0.5, 0.5, (96000, 2)), 48000)
        p = tmp_path / "cut.flac"
        p.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif kind in ("nan", "inf"):
        x = np.zeros((50000, 1), np.float32)
        x[40000] = np.nan if kind == "nan" else np.inf  # in a later block than the first
        p = tmp_path / f"{kind}.wav"
        sf.write(p, x, 16000, subtype="FLOAT")
    elif kind == "extension":
        p = tmp_path / "song.m4a"
        p.write_bytes(b"\0\0\0\x20ftypM4A ")
    elif kind == "missing":
        p = tmp_path / "nowhere.wav"
    else:
        raise AssertionError(kind)
    return p


BAD = {
    "empty": "empty file (0 bytes)",
    "text": "not an audio file (looks like text)",
    "html": "not an audio file (looks like an HTML page)",
    "truncated_header": "truncated or corrupt WAV: Error in WAV file. No 'data' chunk marker",
    "header_only": "no samples",
    "garbage_flac": "not a valid FLAC file (format not recognised)",
    "garbage_mp3": "not a valid MP3 file (format not recognised)",
    "truncated_flac": "truncated or corrupt FLAC: flac decoder lost sync",
    "nan": "contains NaN/Inf samples",
    "inf": "contains NaN/Inf samples",
    "extension": "unsupported format ('.m4a'",
    "missing": "file not found",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input(tmp_path, kind):
    path = _bad_file(kind, tmp_path)
    with pytest.raises(AudioFileError) as err:
        load(path, OUT_SR, block_frames=16384)
    e = err.value
    assert str(e).startswith(BAD[kind]), str(e)
    assert str(e) == e.reason and "\n" not in e.reason
    assert str(path) not in e.reason  # the caller adds the path
    assert isinstance(e, DataError) and e.code == Exit.DATA
    if kind not in ("nan", "inf", "truncated_flac"):  # those need decoding to find
        with pytest.raises(AudioFileError, match="^" + BAD[kind].replace("(", r"\(").replace(")", r"\)")):
            probe(path)


def test_truncated_wav_decodes_what_is_there_with_a_warning(tmp_path, caplog):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (48000, 2)).astype(np.float32)
    src = tmp_path / "full.wav"
    sf.write(src, x, 48000, subtype="FLOAT")
    cut = tmp_path / "cut.wav"
    data = src.read_bytes()
    start = data.index(b"data") + 8  # float WAVs carry fact/PEAK chunks before the data
    cut.write_bytes(data[: start + 8 * 30000 + 5])  # the data chunk cut 30000 frames (and 5 bytes) in
    info = probe(cut)
    assert info.frames == 30000 and info.warning and info.warning.startswith("truncated WAV")
    with caplog.at_level(logging.WARNING, logger="acids_data.audio"):
        y = load(cut, 48000, channels=None)
    assert "truncated WAV" in caplog.text and str(cut) in caplog.text
    np.testing.assert_array_equal(y, x[:30000].T)


def test_bad_arguments(write_audio, make_tone):
    path = write_audio("ok.wav", make_tone(440, 16000, 0.1), 16000)
    for kw in (
        {"sample_rate": 0},
        {"sample_rate": 44100, "channels": 0},
        {"sample_rate": 44100, "block_frames": 0},
    ):
        with pytest.raises(ValueError):
            load(path, **kw)
