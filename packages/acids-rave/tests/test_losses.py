import pytest
import torch

from acids_rave import losses
from acids_rave.losses import (
    feature_matching,
    hinge_discriminator,
    hinge_generator,
    spectral_distance,
    spectral_distance_autograd,
)
from acids_rave.model import kl_divergence
from acids_rave.pqmf import PQMF

SCALES = (2048, 1024, 512, 256, 128)


def test_spectral_distance_zero_for_identical(real_audio):
    x, _ = real_audio(1.0)
    assert spectral_distance(x, x.clone(), SCALES).item() == 0.0


def test_spectral_distance_grows_with_noise(real_audio):
    x, _ = real_audio(1.0)
    torch.manual_seed(0)
    noise = torch.randn_like(x)
    d = [spectral_distance(x, x + a * noise, SCALES).item() for a in (1e-3, 1e-2, 1e-1)]
    assert 0 < d[0] < d[1] < d[2]


def test_spectral_distance_short_signals_and_gradient():
    # shorter than the largest FFT: zero padding, no error (upstream crashes there)
    x = torch.randn(2, 16, 64)
    y = torch.randn(2, 16, 64, requires_grad=True)
    d = spectral_distance(x, y, SCALES)
    d.backward()
    assert torch.isfinite(d) and y.grad is not None and y.grad.abs().sum() > 0


def _value_and_grad(fn, x, y0, scale=1.0, **kw):
    y = y0.clone().requires_grad_()
    d = fn(x, y, SCALES, **kw)
    (scale * d).backward()
    return d.detach(), y.grad


def _estimate_pair(real_audio, bands: bool):
    """Real violin (4 items of 0.37 s at 44.1 kHz-like length) and a distorted estimate of it."""
    x, _ = real_audio(1.5)
    x = x[..., : 4 * 16384].reshape(4, 1, 16384)
    torch.manual_seed(1)
    y = torch.tanh(3 * x) / 3 + 0.01 * torch.randn_like(x)
    if bands:
        pqmf = PQMF(16)
        x, y = pqmf(x), pqmf(y)
    return x, y


@pytest.mark.parametrize("bands", [False, True])
def test_spectral_distance_one_pass_gradient_equals_autograd(real_audio, monkeypatch, bands):
    """The one-pass value + gradient is the autograd reference's, on real audio (full band and PQMF bands).

    With the same magnitude rounding (complex abs) they agree to float rounding. With the default
    re² + im² magnitude a bin whose estimate equals the target to the last bit can take the other side
    of the L1 term's kink (its subgradient jumps), so there the whole gradient is compared in norm.
    """
    x, y0 = _estimate_pair(real_audio, bands)
    ref_d, ref_g = _value_and_grad(spectral_distance_autograd, x, y0)
    d, g = _value_and_grad(spectral_distance, x, y0)
    assert abs(d.item() - ref_d.item()) <= 1e-5 * ref_d.item()
    assert ((g - ref_g).norm() / ref_g.norm()).item() < 1e-4
    monkeypatch.setattr(losses, "_magnitude", lambda spec: spec.abs())
    d, g = _value_and_grad(spectral_distance, x, y0)
    assert abs(d.item() - ref_d.item()) <= 1e-5 * ref_d.item()
    assert ((g - ref_g).abs().max() / ref_g.abs().max()).item() < 1e-5


def test_spectral_distance_one_pass_scaling_and_mean_across(real_audio):
    """The upstream gradient scales the saved one; ``mean_across`` changes the energy it divides by;
    lengths that are not a multiple of the hop and signals shorter than the FFT agree too."""
    x, y0 = _estimate_pair(real_audio, bands=False)
    _, g1 = _value_and_grad(spectral_distance, x, y0)
    _, g3 = _value_and_grad(spectral_distance, x, y0, scale=3.0)
    assert torch.allclose(g3, 3 * g1, rtol=1e-5, atol=1e-9)
    double = lambda e: 2 * e  # noqa: E731 - what an all-reduce mean over ranks could return
    ref_d, ref_g = _value_and_grad(spectral_distance_autograd, x, y0, mean_across=double)
    d, g = _value_and_grad(spectral_distance, x, y0, mean_across=double)
    assert abs(d.item() - ref_d.item()) <= 1e-5 * ref_d.item()
    assert ((g - ref_g).norm() / ref_g.norm()).item() < 1e-4
    plain, _ = _value_and_grad(spectral_distance, x, y0)
    assert d.item() < plain.item()  # the squared-error terms are halved
    for n in (1000, 100):
        ref_d, ref_g = _value_and_grad(spectral_distance_autograd, x[..., :n], y0[..., :n])
        d, g = _value_and_grad(spectral_distance, x[..., :n], y0[..., :n])
        assert abs(d.item() - ref_d.item()) <= 1e-5 * ref_d.item()
        assert ((g - ref_g).norm() / ref_g.norm()).item() < 1e-4


def test_hinge_and_feature_matching():
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert hinge_discriminator(real, fake).item() == 0.0
    assert hinge_discriminator(fake, real).item() == 6.0
    assert hinge_generator(torch.ones(3)).item() == -1.0
    f = [torch.ones(2, 3), 2 * torch.ones(2, 3)]
    assert feature_matching(f, f).item() == 0.0
    g = [torch.zeros(2, 3), torch.ones(2, 3)]
    assert abs(feature_matching(f, g, relative=True).item() - 0.5) < 1e-6  # first layer skipped
    assert abs(feature_matching(f, g, relative=False, skip=0).item() - 1.0) < 1e-6


def test_kl_divergence():
    z = torch.zeros(2, 4, 3)
    assert kl_divergence(z, torch.ones_like(z)).item() == 0.0
    assert kl_divergence(z + 1, torch.ones_like(z)).item() == 2.0  # 0.5 * 1 * 4 dims
