"""Losses (pure functions of tensors): multi-scale spectral distance, hinge GAN, feature matching."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def stft_magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """|STFT| of (B, C, T) with a Hann window and hop n_fft / 4 -> (B * C, n_fft / 2 + 1, frames).

    Zero-padded (not reflected) at both ends, so signals shorter than ``n_fft`` are fine.
    """
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft,
        hop_length=max(n_fft // 4, 1),
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.abs()


def spectral_distance(
    x: torch.Tensor, y: torch.Tensor, scales: tuple[int, ...] | list[int], epsilon: float = 1e-7
) -> torch.Tensor:
    """Multi-scale spectral distance between target ``x`` and estimate ``y`` (both (B, C, T)).

    Sum over STFT sizes of the relative squared error of magnitudes, ‖X − Y‖² / ‖X‖², plus the mean
    absolute difference of log magnitudes. Zero when ``y == x``.
    """
    total = x.new_zeros(())
    for n_fft in scales:
        mx, my = stft_magnitude(x, n_fft), stft_magnitude(y, n_fft)
        total = total + (mx - my).pow(2).mean() / mx.pow(2).mean().clamp_min(1e-12)
        total = total + (torch.log(mx + epsilon) - torch.log(my + epsilon)).abs().mean()
    return total


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of a discriminator's scores on real and generated audio."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def feature_matching(
    real: list[torch.Tensor], fake: list[torch.Tensor], relative: bool = True, skip: int = 1
) -> torch.Tensor:
    """L1 between discriminator features of real and generated audio, averaged over layers.

    ``relative`` divides each layer's L1 by the mean magnitude of its real features; ``skip`` leaves out
    the first ``skip`` layers (the input-side ones carry little).
    """
    pairs = list(zip(real, fake, strict=True))[skip:]
    if not pairs:
        return real[0].new_zeros(())
    total = real[0].new_zeros(())
    for r, f in pairs:
        r = r.detach()
        d = (r - f).abs().mean()
        if relative:
            d = d / r.abs().mean().clamp_min(1e-8)
        total = total + d
    return total / len(pairs)
