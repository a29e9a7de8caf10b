"""Losses (pure functions of tensors): multi-scale spectral distance, hinge GAN, feature matching.

Every loss is a mean over the batch, so data-parallel training (each rank a slice of the batch, gradients
averaged) equals training on the whole batch. The two relative terms divide by a batch statistic of the
target; ``mean_across`` (data-parallel training passes an all-reduce mean over ranks) makes that
statistic the one of the global batch. Without it (one process) it is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable
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

    When ``y`` needs a gradient, the value and its gradient come from one pass (:class:`_SpectralLoss`):
    the same function, 1.6-1.9x faster forward + backward at the training shapes than autograd through
    the STFT (:func:`spectral_distance_autograd`, the definition it is tested against).
    """
    if (
        torch.is_grad_enabled()
        and y.requires_grad
        and not x.requires_grad
        and all(n >= 4 and n % 4 == 0 for n in scales)
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
    ):
        xs = x.detach().reshape(-1, x.shape[-1])
        with torch.no_grad():
            mags = [_magnitude(_spectrum(xs, n)) for n in scales]
            energy = _energy([m.pow(2).mean() for m in mags], mean_across)
        return _SpectralLoss.apply(y.reshape(-1, y.shape[-1]), energy, tuple(scales), epsilon, *mags)
    return spectral_distance_autograd(x, y, scales, epsilon, mean_across)


def spectral_distance_autograd(
    x: torch.Tensor,
    y: torch.Tensor,
    scales: tuple[int, ...] | list[int],
    epsilon: float = 1e-7,
    mean_across: MeanAcross | None = None,
) -> torch.Tensor:
    """:func:`spectral_distance` written directly, differentiated by autograd (the reference)."""
    mags = [(stft_magnitude(x, n), stft_magnitude(y, n)) for n in scales]
    with torch.no_grad():
        energy = _energy([mx.pow(2).mean() for mx, _ in mags], mean_across)
    total = x.new_zeros(())
    for (mx, my), e in zip(mags, energy, strict=True):
        total = total + (mx - my).pow(2).mean() / e
        total = total + (torch.log(mx + epsilon) - torch.log(my + epsilon)).abs().mean()
    return total


def _energy(means: list[torch.Tensor], mean_across: MeanAcross | None) -> torch.Tensor:
    energy = torch.stack(means)
    if mean_across is not None:
        energy = mean_across(energy)
    return energy.clamp_min(1e-12)


def _spectrum(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Rows (R, T) -> STFT (R, frames, n_fft / 2 + 1) as :func:`stft_magnitude` frames it (Hann window,
    hop n_fft / 4, zero padding of n_fft / 2 at both ends), frame-major."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    frames = F.pad(x, (n_fft // 2, n_fft // 2)).unfold(-1, n_fft, n_fft // 4)
    return torch.fft.rfft(frames * window, dim=-1)


def _magnitude(spec: torch.Tensor) -> torch.Tensor:
    # re² + im² then sqrt: ~2.5x faster than complex abs() on CPU
    ri = torch.view_as_real(spec)
    return torch.addcmul(ri[..., 0] * ri[..., 0], ri[..., 1], ri[..., 1]).sqrt_()


class _SpectralLoss(torch.autograd.Function):
    """Value and gradient of the multi-scale spectral distance w.r.t. the estimate rows ``y`` (R, T).

    With M = |Y| per scale (N values): dL/dM = 2 (M − M_x) / (N e) + sign(log(M + ε) − log(M_x + ε))
    / (N (M + ε)); dL/dY = dL/dM · Y / M (0 where M = 0, as autograd's complex abs gives); the frames'
    gradient is the inverse real FFT of that (bins counted twice by the inverse halved, no 1/n) times
    the window, overlap-added at the hop and cropped to the unpadded signal. Computed in ``forward``
    (no spectra are kept for ``backward``, which only scales it): a scalar loss needs nothing else.
    """

    @staticmethod
    def forward(ctx, y, energy, scales, epsilon, *mags_x):  # type: ignore[override]
        r, t = y.shape
        grad = torch.zeros_like(y)
        total = y.new_zeros(())
        for mx, e, n in zip(mags_x, energy, scales, strict=True):
            spec = _spectrum(y, n)
            my = _magnitude(spec)
            count = my.numel()
            diff = my - mx
            dlog = torch.log(my + epsilon).sub_(torch.log(mx + epsilon))
            total = total + diff.pow(2).sum() / (count * e) + dlog.abs().sum() / count
            coef = diff.mul_(2.0 / (count * e)).add_(dlog.sign_().div_(my + epsilon).div_(count))
            coef = torch.where(my > 0, coef / my, 0.0)
            coef[..., 1 : n // 2] *= 0.5
            frames = torch.fft.irfft(spec * coef, n=n, dim=-1, norm="forward")
            frames = frames * torch.hann_window(n, device=y.device, dtype=y.dtype)
            hop, nt = n // 4, frames.shape[1]
            # overlap-add: frame f's quarter j lands on hop slot f + j of the padded signal
            acc = frames.new_zeros(r, max(nt + 3, -(-(t + n) // hop)), hop)
            quarters = frames.reshape(r, nt, 4, hop)
            for j in range(4):
                acc[:, j : j + nt] += quarters[:, :, j]
            grad += acc.reshape(r, -1)[:, n // 2 : n // 2 + t]
        ctx.save_for_backward(grad)
        ctx.n_scales = len(scales)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad * grad_output, None, None, None, *[None] * ctx.n_scales)


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
