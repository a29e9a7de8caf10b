"""``acids-ddsp stream`` through real pipes: streamed output == offline resynthesis of the same input."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_controls

from acids_ddsp import checkpoint
from acids_ddsp.config import preset
from acids_ddsp.model import DDSP
from acids_ddsp.stream import FeatureStream, PcmReader, adjust_frames

PHRASE = Path("/work/shared/data/phrases/16000/violin_phrases.flac")
EXE = Path(sys.executable).with_name("acids-ddsp")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stream") / "tiny.ckpt"
    checkpoint.save(DDSP(preset("tiny")).eval(), path)
    return path


def _phrase(seconds: float) -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    if not PHRASE.exists():
        pytest.skip(f"{PHRASE} is not here")
    x, sr = sf.read(PHRASE, start=2 * 16000, frames=int(seconds * 16000), dtype="float32")
    assert sr == 16000
    return x


def _pipe(command: str, data: bytes) -> bytes:
    if not EXE.exists():
        pytest.skip("the acids-ddsp console script is not installed")
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], input=data, capture_output=True, timeout=300
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout


def test_feature_stream_equals_offline_features():
    from acids_data.features import compute_features

    x = _phrase(2.5)
    offline = compute_features(x[None], 16000, 64, ["loudness", "f0"])
    fs = FeatureStream(16000, 64)
    parts = [fs.push(c) for c in np.split(x, np.arange(700, len(x), 700))] + [fs.flush()]
    for key in ("f0", "f0_confidence", "loudness"):
        streamed = np.concatenate([p[key] for p in parts])
        np.testing.assert_array_equal(streamed, offline[key], err_msg=key)


def test_audio_stream_through_a_pipe_equals_offline_resynthesis(model_path, tmp_path):
    from acids_data.features import compute_features

    x = _phrase(2.0)
    raw = tmp_path / "in.f32"
    raw.write_bytes(x.astype("<f4").tobytes())
    out = _pipe(
        f"cat {raw} | {EXE} -q stream {model_path} --block 512 --pitch-shift 2 --unvoiced-db 20 | cat", b""
    )
    streamed = np.frombuffer(out, "<f4")
    feats = compute_features(x[None], 16000, 64, ["loudness", "f0"])
    f0, loudness = adjust_frames(feats["f0"], feats["f0_confidence"], feats["loudness"], 2.0, 0.0, 20.0)
    model = checkpoint.load(model_path)
    with torch.no_grad():
        offline = model(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None])[0, 0].numpy()
    assert streamed.shape == offline.shape == (len(x) // 64 * 64,)
    np.testing.assert_allclose(streamed, offline, atol=2e-5, rtol=1e-4)


def test_control_stream_through_a_pipe_equals_offline(model_path):
    f0, loudness = random_controls(1, 100, torch.Generator().manual_seed(3))
    pairs = torch.stack([f0[0, 0], loudness[0, 0]], dim=-1).numpy().astype("<f4")
    out = _pipe(f"cat | {EXE} -q stream {model_path} --controls --block 448 --wav", pairs.tobytes())
    assert out[:4] == b"RIFF" and out[36:40] == b"data"
    streamed = np.frombuffer(out[44:], "<f4")
    model = checkpoint.load(model_path)
    with torch.no_grad():
        offline = model(f0, loudness)[0, 0].numpy()
    assert streamed.shape == offline.shape == (100 * 64,)
    np.testing.assert_allclose(streamed, offline, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wav_streams_are_read_without_seeking(subtype):
    sf = pytest.importorskip("soundfile")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 2)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, subtype=subtype, format="WAV")
    expected = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")[0].mean(axis=1)
    reader = PcmReader(io.BufferedReader(io.BytesIO(buf.getvalue())), 16000)
    blocks = []
    while (block := reader.read(300)) is not None:
        blocks.append(block)
    np.testing.assert_allclose(np.concatenate(blocks), expected, atol=1e-6)


def test_reader_resamples_to_the_model_rate_as_one_shot_soxr():
    """A WAV stream at 48 kHz read for a 16 kHz model: the blocks joined equal soxr's one-shot resampling."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    src = PHRASE.parent.parent / "48000" / PHRASE.name
    if not src.exists():
        pytest.skip(f"{src} is not here")
    x, sr = sf.read(src, start=2 * 48000, frames=48000, dtype="float32")
    assert sr == 48000
    buf = io.BytesIO()
    sf.write(buf, x, 48000, subtype="FLOAT", format="WAV")
    reader = PcmReader(io.BufferedReader(io.BytesIO(buf.getvalue())), 16000)
    assert reader.input_rate == 48000
    blocks = []
    while (block := reader.read(700)) is not None:
        blocks.append(block)
    assert len(blocks) > 10  # streamed, not read at once
    expected = soxr.resample(x, 48000, 16000, quality="HQ")
    joined = np.concatenate(blocks)
    assert joined.shape == expected.shape == (16000,)
    np.testing.assert_allclose(joined, expected, atol=1e-6)


def test_audio_stream_at_another_rate_equals_the_stream_of_resampled_audio(model_path, tmp_path):
    """`stream` on a 48 kHz WAV (and on raw float32 with --rate 48000) for a 16 kHz model gives what the
    same audio resampled to 16 kHz beforehand gives."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    src = PHRASE.parent.parent / "48000" / PHRASE.name
    if not src.exists():
        pytest.skip(f"{src} is not here")
    x, _ = sf.read(src, start=2 * 48000, frames=int(1.5 * 48000), dtype="float32")
    wav = tmp_path / "in48.wav"
    sf.write(wav, x, 48000, subtype="FLOAT")
    raw48 = tmp_path / "in48.f32"
    raw48.write_bytes(x.astype("<f4").tobytes())
    raw16 = tmp_path / "in16.f32"
    raw16.write_bytes(soxr.resample(x, 48000, 16000, quality="HQ").astype("<f4").tobytes())
    ref = np.frombuffer(_pipe(f"cat {raw16} | {EXE} -q stream {model_path} --block 512", b""), "<f4")
    from_wav = np.frombuffer(_pipe(f"cat {wav} | {EXE} -q stream {model_path} --block 512", b""), "<f4")
    from_raw = np.frombuffer(
        _pipe(f"cat {raw48} | {EXE} -q stream {model_path} --block 512 --rate 48000", b""), "<f4"
    )
    assert ref.shape == (24000 // 64 * 64,)
    np.testing.assert_allclose(from_wav, ref, atol=1e-5)
    np.testing.assert_allclose(from_raw, ref, atol=1e-5)


@pytest.fixture(scope="module")
def ae_path(tmp_path_factory):
    torch.manual_seed(0)
    model = DDSP(preset("tiny-ae")).eval()
    model.z_mean.copy_(torch.tensor([0.5, -1.0, 0.25, 2.0]))
    path = tmp_path_factory.mktemp("stream_ae") / "tiny-ae.ckpt"
    checkpoint.save(model, path)
    return path


def test_autoencoder_audio_stream_encodes_the_same_z_as_offline(ae_path, tmp_path):
    """tiny-ae through a pipe: z from the streamed input (delayed with the features) == offline z."""
    from acids_data.features import compute_features

    x = _phrase(2.0)
    raw = tmp_path / "in.f32"
    raw.write_bytes(x.astype("<f4").tobytes())
    out = _pipe(f"cat {raw} | {EXE} -q stream {ae_path} --block 320 --loudness-shift -3 | cat", b"")
    streamed = np.frombuffer(out, "<f4")
    feats = compute_features(x[None], 16000, 64, ["loudness", "f0"])
    f0, loudness = adjust_frames(feats["f0"], feats["f0_confidence"], feats["loudness"], 0.0, -3.0, 0.0)
    model = checkpoint.load(ae_path)
    n = len(f0) * 64
    with torch.no_grad():
        offline = model(
            torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None], torch.from_numpy(x[None, :n])
        )
        with_mean = model(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None])
    assert streamed.shape == (n,)
    np.testing.assert_allclose(streamed, offline[0, 0].numpy(), atol=2e-5, rtol=1e-4)
    assert np.abs(streamed - with_mean[0, 0].numpy()).max() > 1e-3  # z came from the audio


def test_autoencoder_control_stream_uses_the_mean_z(ae_path):
    f0, loudness = random_controls(1, 60, torch.Generator().manual_seed(4))
    pairs = torch.stack([f0[0, 0], loudness[0, 0]], dim=-1).numpy().astype("<f4")
    streamed = np.frombuffer(
        _pipe(f"cat | {EXE} -q stream {ae_path} --controls --block 256", pairs.tobytes()), "<f4"
    )
    model = checkpoint.load(ae_path)
    with torch.no_grad():
        offline = model(f0, loudness)[0, 0].numpy()
    np.testing.assert_allclose(streamed, offline, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("precision", "max_err"), [("bf16", 1e-4), ("int8", 1e-3)])
def test_control_stream_in_lower_precision_is_close_to_float32(model_path, precision, max_err):
    f0, loudness = random_controls(1, 100, torch.Generator().manual_seed(5))
    pairs = torch.stack([f0[0, 0], loudness[0, 0]], dim=-1).numpy().astype("<f4")
    out = _pipe(f"cat | {EXE} -q stream {model_path} --controls --precision {precision}", pairs.tobytes())
    streamed = np.frombuffer(out, "<f4")
    model = checkpoint.load(model_path)
    with torch.no_grad():
        offline = model(f0, loudness)[0, 0].numpy()
        model.set_precision(precision)
        offline_low = model(f0, loudness)[0, 0].numpy()
    err = np.mean((streamed - offline) ** 2) / np.mean(offline**2)
    assert 1e-12 < err < max_err, err  # not exact; SNR > 40 dB (bf16), > 30 dB (int8)
    if precision == "int8":  # per-frame input scales: the stream is the int8 model's offline output
        np.testing.assert_allclose(streamed, offline_low, atol=2e-5, rtol=1e-4)
