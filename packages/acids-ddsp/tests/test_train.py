"""Training smoke test: the tiny model fits seconds of a real violin phrase (features from acids-data)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from acids_ddsp.config import preset
from acids_ddsp.losses import from_config
from acids_ddsp.model import DDSP
from acids_ddsp.train import make_optimizer, train_step

PHRASE = Path("/work/shared/data/phrases/16000/violin_phrases.flac")


def _phrase_features(seconds: float, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sf = pytest.importorskip("soundfile")
    features = pytest.importorskip("acids_data.features")
    if not PHRASE.exists():
        pytest.skip(f"{PHRASE} is not here")
    audio, sr = sf.read(PHRASE, dtype="float32", start=2 * 16000, frames=int(seconds * 16000), always_2d=True)
    assert sr == 16000
    x = audio.T.mean(axis=0, keepdims=True)  # (1, T)
    feats = features.compute_features(x, sr, hop, ["loudness", "f0"])
    return x[0], feats["f0"], feats["loudness"]


@pytest.mark.parametrize("name", ["tiny", "tiny-ae"])
def test_tiny_fits_a_real_phrase(name):
    """The loss falls on held-out crops; tiny-ae trains its encoder end to end from the target audio."""
    cfg = preset(name)
    hop = cfg.hop
    audio, f0, loudness = _phrase_features(10.0, hop)
    frames = 125  # 0.5 s crops
    g = torch.Generator().manual_seed(0)
    audio_t, f0_t, ld_t = torch.from_numpy(audio), torch.from_numpy(f0), torch.from_numpy(loudness)

    def batch(starts):
        return {
            "audio": torch.stack([audio_t[s * hop : (s + frames) * hop] for s in starts])[:, None],
            "f0": torch.stack([f0_t[s : s + frames] for s in starts]),
            "loudness": torch.stack([ld_t[s : s + frames] for s in starts]),
        }

    n_frames = len(f0)
    held = batch([100, 600, 1100, 1800])
    torch.manual_seed(0)
    model = DDSP(cfg)
    loss_fn = from_config(cfg)
    opt, sched = make_optimizer(model, cfg)

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(loss_fn(model(held["f0"], held["loudness"], held["audio"]), held["audio"]))

    before = held_loss()
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    losses = []
    for _ in range(40):
        starts = torch.randint(0, n_frames - frames, (4,), generator=g).tolist()
        losses.append(train_step(model, loss_fn, opt, sched, batch(starts), cfg.train.grad_clip))
    after = held_loss()
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert after < 0.8 * before, (before, after)
    # the encoder's weights were trained (they get gradients through z)
    assert all(not torch.equal(a, p) for a, p in zip(encoder, model.encoder.parameters(), strict=True))


class FakeWriter:
    def __init__(self):
        self.audio = {}

    def add_audio(self, tag, audio, step, sample_rate):
        self.audio[tag] = (audio.shape, step, sample_rate)


def test_report_logs_audio_and_writes_a_png(tmp_path):
    from acids_ddsp.train import _report

    torch.manual_seed(0)
    cfg = preset("tiny")
    model = DDSP(cfg)
    batch = {
        "audio": torch.randn(2, 1, 32 * cfg.hop) * 0.1,
        "f0": torch.full((2, 32), 220.0),
        "loudness": torch.full((2, 32), -30.0),
    }
    writer = FakeWriter()
    _report(model, batch, 7, [(1, 3.0), (7, 2.0)], tmp_path, writer)
    assert writer.audio["audio/resynthesis"] == ((32 * cfg.hop,), 7, 16000)
    assert model.training  # restored
    pytest.importorskip("matplotlib")
    assert (tmp_path / "plots" / "step-0000007.png").exists()
