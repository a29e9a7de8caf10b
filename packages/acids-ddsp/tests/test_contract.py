"""The acids-core model contract on the tiny preset (f0/loudness are frame-rate inputs, audio comes out)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_controls

from acids_core.testing import ModelContract
from acids_ddsp import checkpoint
from acids_ddsp.config import preset
from acids_ddsp.model import DDSP

# nn.GRU's flat weights trigger a torch.export UserWarning that is about torch internals, not this model
pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes self.*gru:UserWarning")


class TestTinyDDSP(ModelContract):
    # the contract's lengths and blocks are in audio samples; the inputs are frames of HOP samples
    hop = preset("tiny").hop
    block = 8 * hop
    length = 64 * hop
    ratio = 1

    def make_model(self):
        torch.manual_seed(0)
        return DDSP(preset("tiny")).eval()

    def make_input(self, batch, length):
        return random_controls(batch, length // self.hop)

    def split_input(self, inputs, block):
        frames = block // self.hop
        pieces = [x.split(frames, dim=-1) for x in inputs]
        return [tuple(p) for p in zip(*pieces, strict=True)]

    def save(self, model, path):
        checkpoint.save(model, path)

    def load(self, path):
        return checkpoint.load(path)

    # FFT convolutions (noise filter, reverb) leak float round-off (~1e-10 relative) across the whole signal
    causal_rtol = 1e-6

    def causal_horizon(self, step, input_index, input_length):
        """Audio sample ``step`` depends on frames <= its own frame (frame-level causality)."""
        return step // self.hop + 1


class TestTinyAutoencoder(TestTinyDDSP):
    """The autoencoder variant: f0, loudness frames and the audio they come from (z from the MFCC encoder)."""

    def make_model(self):
        torch.manual_seed(0)
        return DDSP(preset("tiny-ae")).eval()

    def make_input(self, batch, length):
        f0, loudness = random_controls(batch, length // self.hop)
        # a harmonic tone with a drifting spectrum + noise: MFCCs that change from frame to frame
        t = torch.arange(length) / 16000.0
        tone = sum(torch.sin(2 * torch.pi * 220.0 * k * t) * (t * k).cos() / k for k in range(1, 6))
        audio = 0.3 * tone + 0.05 * torch.randn(batch, 1, length)
        return f0, loudness, audio

    def split_input(self, inputs, block):
        f0, loudness, audio = inputs
        frames = block // self.hop
        return list(
            zip(f0.split(frames, -1), loudness.split(frames, -1), audio.split(block, -1), strict=True)
        )

    def causal_horizon(self, step, input_index, input_length):
        """Sample ``step`` depends on frames <= its frame, and on audio up to the end of its frame."""
        frame = step // self.hop
        return (frame + 1) * self.hop if input_index == 2 else frame + 1


@pytest.mark.parametrize("sizes", [[1] * 12, [3, 5, 1, 7, 2, 6], [12], [2, 10]])
def test_streaming_in_uneven_blocks(sizes):
    """Streaming == offline for any sequence of block sizes (in frames), reverb and noise tails included."""
    torch.manual_seed(1)
    model = DDSP(preset("tiny")).eval()
    f0, loudness = random_controls(2, sum(sizes))
    with torch.no_grad():
        offline = model(f0, loudness)
        model.set_streaming(True)
        streamed = torch.cat(
            [model(a, b) for a, b in zip(f0.split(sizes, -1), loudness.split(sizes, -1), strict=True)], dim=-1
        )
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)


def test_streaming_restarts_fresh():
    model = DDSP(preset("tiny")).eval()
    f0, loudness = random_controls(1, 16)
    with torch.no_grad():
        model.set_streaming(True)
        first = model(f0, loudness)
        model(f0, loudness)
        model.set_streaming(True)
        again = model(f0, loudness)
    torch.testing.assert_close(again, first)


@pytest.mark.parametrize("name", ["full", "full-48k", "small", "small-48k", "tiny", "small-ae", "tiny-ae"])
def test_presets_build_and_run(name):
    cfg = preset(name)
    model = DDSP(cfg).eval()
    assert cfg.realtime_hop
    with torch.no_grad():
        out = model(torch.full((1, 1, 4), 220.0), torch.full((1, 1, 4), -30.0))
    assert out.shape == (1, 1, 4 * cfg.hop)
    assert torch.isfinite(out).all()
