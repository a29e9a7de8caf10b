"""bfloat16 inference weights: an explicit option, within a stated tolerance of the float32 offline output."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_controls

from acids_ddsp.config import preset
from acids_ddsp.export import exportable, script
from acids_ddsp.model import DDSP, Bf16Linear, InferenceGRU

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
    with pytest.raises(ValueError, match="bfloat16"):
        model.set_precision("fp32")
    with pytest.raises(ValueError, match="inference"):
        DDSP(preset("tiny")).set_precision("bf16")  # training mode
    f0, loudness = random_controls(2, 10)
    with torch.no_grad():
        y = model(f0, loudness)
    assert y.dtype == torch.float32 and np.isfinite(y.numpy()).all()
