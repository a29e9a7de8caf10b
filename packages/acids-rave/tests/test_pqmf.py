import pytest
import torch

from acids_rave.pqmf import PQMF, prototype


def _snr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum()))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name", ["violin", "cello"])
def test_reconstruction_of_real_audio(causal, name, real_audio):
    # whole recordings measure 57-65 dB (cello lowest, violin/alto sax highest)
    x, _ = real_audio(4.0, name=name)
    pqmf = PQMF(16, 16, 9.0, causal=causal)
    bands = pqmf(x)
    assert bands.shape == (1, 16, x.shape[-1] // 16)
    y = pqmf.inverse(bands)
    d = pqmf.delay
    assert d == (240 if causal else 0)
    edge = 2048  # leave out the zero-padded ends
    ref, out = x[..., edge : x.shape[-1] - d - edge], y[..., d + edge : y.shape[-1] - edge]
    snr = _snr(ref, out)
    assert snr > 55.0, f"PQMF reconstruction SNR {snr:.1f} dB"


def test_tiny_pqmf_reconstruction(real_audio):
    x, _ = real_audio(2.0)
    pqmf = PQMF(16, 8, 8.0)
    y = pqmf.inverse(pqmf(x))
    d = pqmf.delay
    assert _snr(x[..., 2048 : -2048 - d], y[..., 2048 + d : -2048]) > 50.0


def test_bands_split_the_spectrum():
    # a sine in the middle of band 5 lands (almost) only in band 5
    n, sr = 16384, 32.0
    f = (5 + 0.5) / 16 * 0.5  # cycles/sample
    t = torch.arange(n, dtype=torch.float64)
    x = torch.sin(2 * torch.pi * f * t).float()[None, None]
    energy = PQMF(16, 16, 9.0)(x)[..., 64:].pow(2).mean(-1)[0]
    assert energy.argmax() == 5
    assert energy[5] / energy.sum() > 0.999
    del sr


def test_streaming_pqmf_equals_offline():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4096)
    pqmf = PQMF(16, 16, 9.0)
    offline = pqmf.inverse(pqmf(x))
    pqmf.analysis_pad.set_streaming(True)
    pqmf.synthesis_pad.set_streaming(True)
    blocks = [pqmf.inverse(pqmf(c)) for c in x.split([16, 48, 512, 1024, 2496], dim=-1)]
    torch.testing.assert_close(torch.cat(blocks, -1), offline, atol=1e-6, rtol=1e-5)


def test_prototype_is_cached_and_symmetric():
    h = prototype(16, 256, 9.0)
    assert prototype(16, 256, 9.0) is h
    assert abs(h - h[::-1]).max() < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError):
        PQMF(12)
    with pytest.raises(ValueError):
        PQMF(16)(torch.zeros(1, 1, 100))
