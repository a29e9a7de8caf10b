"""bfloat16 / int8 inference weights: explicit options, within a stated tolerance of the float32 offline
output; an int8 stream equals the int8 model's offline run."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_controls

from acids_ddsp.config import preset
from acids_ddsp.export import exportable, script
from acids_ddsp.model import DDSP, Bf16Linear, InferenceGRU, Int8GRU, Int8Linear

PHRASE = Path("/work/shared/data/phrases/16000/violin_phrases.flac")


def _snr_db(y: torch.Tensor, ref: torch.Tensor) -> float:
    err = (y - ref).pow(2).mean() / ref.pow(2).mean().clamp_min(1e-20)
    return -10 * math.log10(max(err.item(), 1e-30))


def _violin_controls(seconds: float, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    sf = pytest.importorskip("soundfile")
    features = pytest.importorskip("acids_data.features")
    if not PHRASE.exists():
        pytest.skip(f"{PHRASE} is not here")
    x, sr = sf.read(PHRASE, start=2 * 16000, frames=int(seconds * 16000), dtype="float32")
    feats = features.compute_features(x[None], sr, hop, ["loudness", "f0"])
    return torch.from_numpy(feats["f0"])[None], torch.from_numpy(feats["loudness"])[None]


def test_inference_gru_in_float32_is_the_torch_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(12, 20, batch_first=True)
    copy = InferenceGRU(gru, torch.float32)
    x, h0 = torch.randn(3, 7, 12), torch.randn(1, 3, 20)
    with torch.no_grad():
        for h in (None, h0):
            y, hn = gru(x, h)
            y2, hn2 = copy(x, h)
            torch.testing.assert_close(y2, y, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(hn2, hn, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["small", "small-ae"])
def test_bf16_streaming_nn_module_is_within_40_db_of_fp32_offline(name):
    """The trained weights are random here; the controls are a real violin phrase's."""
    cfg = preset(name)
    torch.manual_seed(0)
    model = DDSP(cfg).eval()
    f0, loudness = _violin_controls(3.0, cfg.hop)
    audio = 0.1 * torch.randn(1, 1, f0.shape[-1] * cfg.hop)
    scripted = script(exportable(model, streaming=True, precision="bf16"))
    assert exportable(model, precision="bf16").io_spec()["precision"] == "bf16"
    assert scripted.model.decoder.head.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    per = 1024 // cfg.hop  # nn~'s 1024-sample host buffer
    with torch.no_grad():
        offline = model(f0, loudness, audio)
        x = torch.stack([f0, loudness], dim=1)  # (1, 2, F): what nn~ hands at in_ratio = hop
        if model.has_encoder:
            z = torch.cat([scripted.encode(c) for c in audio.split(per * cfg.hop, -1)], dim=-1)
            x = torch.cat([x, z], dim=1)
            streamed = torch.cat([scripted.decode(c) for c in x.split(per, -1)], dim=-1)
        else:
            streamed = torch.cat([scripted(c) for c in x.split(per, -1)], dim=-1)
    snr = _snr_db(streamed, offline)
    # really bfloat16 (not exact), within the documented tolerance (measured 52-53 dB)
    assert 40.0 < snr < 200.0, snr


def test_precision_option_checks():
    model = DDSP(preset("tiny")).eval()
    with pytest.raises(ValueError, match="precision"):
        model.set_precision("fp16")
    model.set_precision("fp32")  # no-op
    model.set_precision("bf16")
    assert isinstance(model.decoder.gru, InferenceGRU) and isinstance(model.decoder.head, Bf16Linear)
    assert model.precision() == "bf16"
    model.set_precision("bf16")  # no-op
    for other in ("fp32", "int8"):
        with pytest.raises(ValueError, match="already holds bf16"):
            model.set_precision(other)
    with pytest.raises(ValueError, match="inference"):
        DDSP(preset("tiny")).set_precision("bf16")  # training mode
    f0, loudness = random_controls(2, 10)
    with torch.no_grad():
        y = model(f0, loudness)
    assert y.dtype == torch.float32 and np.isfinite(y.numpy()).all()


def test_int8_linear_is_close_to_float32_and_each_frame_is_independent():
    torch.manual_seed(0)
    lin = torch.nn.Linear(192, 300)
    q = Int8Linear(lin)
    assert q.weight_t.dtype == torch.int8
    x = torch.randn(3, 50, 192) * torch.logspace(-2, 1, 50)[None, :, None]  # rows of very different scales
    with torch.no_grad():
        ref, y = lin(x), q(x)
        rel = ((y - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()
        assert 1e-4 < rel < 3e-2, rel  # int8 (not exact), every row within 3 % (per-row input scale)
        # a frame's output does not depend on the other frames of the call: bit for bit
        parts = torch.cat([q(c) for c in x.split([1, 7, 2, 40], dim=1)], dim=1)
        assert torch.equal(parts, y)
        assert q(x[:, :0]).shape == (3, 0, 300)


def test_int8_gru_state_path_is_close_to_the_torch_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(64, 96, batch_first=True)
    q = InferenceGRU(gru, torch.int8)
    x, h0 = torch.randn(2, 40, 64), torch.rand(1, 2, 96) * 2 - 1
    with torch.no_grad():
        y, _ = gru(x, h0)
        y2, hn2 = q(x, h0)
        ys, h = [], h0
        for c in x.split([3, 1, 36], dim=1):  # streamed in uneven blocks: identical
            yc, h = q(c, h)
            ys.append(yc)
        y3, hn3 = Int8GRU(gru)(x, h0)  # the compiled frame loop: the same operators, the same numbers
    rel = ((y2 - y).norm() / y.norm()).item()
    assert 1e-4 < rel < 3e-2, rel
    assert torch.equal(torch.cat(ys, dim=1), y2) and torch.equal(h, hn2)
    assert torch.equal(y3, y2) and torch.equal(hn3, hn2)


@pytest.mark.parametrize("name", ["small", "small-ae"])
def test_int8_nn_module_reloads_streams_as_offline_and_is_within_30_db_of_fp32(name, tmp_path):
    """Random weights, real violin controls: the scripted int8 nn~ module, saved and reloaded, streamed in
    1024-sample calls == the int8 model offline (eager), and within the documented SNR of float32."""
    cfg = preset(name)
    torch.manual_seed(0)
    model = DDSP(cfg).eval()
    f0, loudness = _violin_controls(3.0, cfg.hop)
    audio = 0.1 * torch.randn(1, 1, f0.shape[-1] * cfg.hop)
    wrapper = exportable(model, streaming=True, precision="int8")
    assert wrapper.io_spec()["precision"] == "int8"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is untouched
    buf = io.BytesIO()
    torch.jit.save(script(wrapper), buf)
    buf.seek(0)
    scripted = torch.jit.load(buf)
    assert scripted.model.decoder.head.weight_t.dtype == torch.int8
    int8 = exportable(model, streaming=False, precision="int8").model
    per = 1024 // cfg.hop
    with torch.no_grad():
        offline = model(f0, loudness, audio)
        offline_int8 = int8(f0, loudness, audio)
        x = torch.stack([f0, loudness], dim=1)
        if model.has_encoder:
            z = torch.cat([scripted.encode(c) for c in audio.split(per * cfg.hop, -1)], dim=-1)
            torch.testing.assert_close(z.transpose(1, 2), int8.encode(audio), atol=1e-6, rtol=1e-5)
            streamed = torch.cat([scripted.decode(c) for c in torch.cat([x, z], 1).split(per, -1)], -1)
        else:
            streamed = torch.cat([scripted(c) for c in x.split(per, -1)], dim=-1)
    # streaming == offline within the int8 model (float round-off of the synths only)
    torch.testing.assert_close(streamed, offline_int8, atol=1e-6, rtol=1e-5)
    snr = _snr_db(offline_int8, offline)
    assert 30.0 < snr < 60.0, snr  # really int8 (measured 38-42 dB on these models), not float32


def test_int8_option_checks():
    model = DDSP(preset("small")).eval()
    model.set_precision("int8")
    assert model.precision() == "int8"
    assert isinstance(model.decoder.gru, Int8GRU) and isinstance(model.decoder.head, Int8Linear)
    assert isinstance(model.decoder.f0_mlp[0], torch.nn.Linear)  # 1 input: stays float32
    with pytest.raises(ValueError, match="already holds int8"):
        model.set_precision("bf16")
    with pytest.raises(ValueError, match="inference"):
        DDSP(preset("small")).set_precision("int8")  # training mode
