"""Multi-scale spectral loss (pure: no optimizer, no state but cached windows)."""

import torch
from torch import nn


class MultiScaleSpectralLoss(nn.Module):
    """L1 distance of STFT magnitudes and log magnitudes at several FFT sizes, summed over sizes.

    Per size n (hop n * (1 - overlap), periodic Hann window, centred frames):
    ``mag_weight * mean|S_x - S_y| + logmag_weight * mean|log(S_x + eps) - log(S_y + eps)|``, magnitudes
    unnormalised as in magenta's SpectralLoss. Use :func:`acids_ddsp.config.reference_fft_sizes` for the
    reference sizes at any rate (6144 ... 192 at 48 kHz).
    """

    def __init__(
        self,
        fft_sizes: tuple[int, ...],
        overlap: float = 0.75,
        mag_weight: float = 1.0,
        logmag_weight: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not fft_sizes:
            raise ValueError("need at least one FFT size")
        self.fft_sizes = tuple(int(n) for n in fft_sizes)
        self.overlap = overlap
        self.mag_weight = mag_weight
        self.logmag_weight = logmag_weight
        self.eps = eps
        for n in self.fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def magnitude(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(B, ..., T) → (B*, n // 2 + 1, frames) STFT magnitude at FFT size n."""
        hop = max(1, round(n * (1.0 - self.overlap)))
        window = getattr(self, f"window_{n}")
        return torch.stft(
            x.reshape(-1, x.shape[-1]), n, hop, window=window, center=True, return_complex=True
        ).abs()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Args: x, y (B, 1, T) or (B, T), same shape. Returns: the scalar loss."""
        if x.shape != y.shape:
            raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        total = x.new_zeros(())
        for n in self.fft_sizes:
            sx, sy = self.magnitude(x, n), self.magnitude(y, n)
            if self.mag_weight:
                total = total + self.mag_weight * (sx - sy).abs().mean()
            if self.logmag_weight:
                log_diff = torch.log(sx + self.eps) - torch.log(sy + self.eps)
                total = total + self.logmag_weight * log_diff.abs().mean()
        return total


def from_config(cfg) -> MultiScaleSpectralLoss:  # cfg: DDSPConfig (untyped to keep this module pure)
    """The loss of a :class:`~acids_ddsp.config.DDSPConfig` (FFT sizes resolved for its rate)."""
    lc = cfg.loss
    return MultiScaleSpectralLoss(cfg.fft_sizes, lc.overlap, lc.mag_weight, lc.logmag_weight, lc.eps)
