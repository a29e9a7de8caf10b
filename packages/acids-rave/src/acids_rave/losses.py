"""Losses (pure functions of tensors): multi-scale spectral distance, hinge GAN, feature matching.

Every loss is a mean over the batch, so data-parallel training (each rank a slice of the batch, gradients
averaged) equals training on the whole batch. The two relative terms divide by a batch statistic of the
target; ``mean_across`` (data-parallel training passes an all-reduce mean over ranks) makes that
statistic the one of the global batch. Without it (one process) it is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

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


MeanAcross = Callable[[torch.Tensor], torch.Tensor]


def spectral_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    scales: tuple[int, ...] | list[int],
    epsilon: float = 1e-7,
    mean_across: MeanAcross | None = None,
) -> torch.Tensor:
    """Multi-scale spectral distance between target ``x`` and estimate ``y`` (both (B, C, T)).

    Sum over STFT sizes of the relative squared error of magnitudes, ‖X − Y‖² / ‖X‖², plus the mean
    absolute difference of log magnitudes. Zero when ``y == x``. ``mean_across``: see the module docstring.
    """
    mags = [(stft_magnitude(x, n), stft_magnitude(y, n)) for n in scales]
    with torch.no_grad():
        energy = torch.stack([mx.pow(2).mean() for mx, _ in mags])
        if mean_across is not None:
            energy = mean_across(energy)
        energy = energy.clamp_min(1e-12)
    total = x.new_zeros(())
    for (mx, my), e in zip(mags, energy, strict=True):
        total = total + (mx - my).pow(2).mean() / e
        total = total + (torch.log(mx + epsilon) - torch.log(my + epsilon)).abs().mean()
    return total


def hinge_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of a discriminator's scores on real and generated audio."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def feature_matching(
    real: list[torch.Tensor],
    fake: list[torch.Tensor],
    relative: bool = True,
    skip: int = 1,
    mean_across: MeanAcross | None = None,
) -> torch.Tensor:
    """L1 between discriminator features of real and generated audio, averaged over layers.

    ``relative`` divides each layer's L1 by the mean magnitude of its real features; ``skip`` leaves out
    the first ``skip`` layers (the input-side ones carry little).
    """
    pairs = list(zip(real, fake, strict=True))[skip:]
    if not pairs:
        return real[0].new_zeros(())
    scale = None
    if relative:
        with torch.no_grad():
            scale = torch.stack([r.abs().mean() for r, _ in pairs])
            if mean_across is not None:
                scale = mean_across(scale)
            scale = scale.clamp_min(1e-8)
    total = real[0].new_zeros(())
    for i, (r, f) in enumerate(pairs):
        d = (r.detach() - f).abs().mean()
        total = total + (d / scale[i] if scale is not None else d)
    return total / len(pairs)
