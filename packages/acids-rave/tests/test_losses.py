import torch

from acids_rave.losses import feature_matching, hinge_discriminator, hinge_generator, spectral_distance
from acids_rave.model import kl_divergence

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
