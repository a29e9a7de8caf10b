"""Losses and the paper's metrics (pure functions of tensors)."""

from __future__ import annotations

import torch


def recon_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over the spectrogram's bins, per item (B,).

    The reference code divides its summed MSE by the 64 x 80 bins (``rec_loss / (x.shape[1] *
    x.shape[2])`` in ``RegressionAE.train_epoch``), which is what makes its regression weight (``gamma``
    up to 1e3) and the KL weight (``beta`` = 1) meaningful: summed over the bins instead, the
    reconstruction outweighs the regression 5,120 times more and the latent learns little about the
    parameters.
    """
    return (recon - target).square().flatten(1).mean(-1)


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the parameters, per item (B,)."""
    return (pred - target).square().mean(-1)


def mmd(z: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """MMD between the batch ``z`` (B, D) and as many N(0, I) draws, inverse multiquadric kernel (WAE)."""
    prior = torch.randn_like(z)
    c = 2.0 * z.shape[-1] * scale

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return c / (c + torch.cdist(a, b).square())

    n = z.shape[0]
    off = 1.0 - torch.eye(n, dtype=z.dtype)
    kzz = (k(z, z) * off).sum() / (n * (n - 1))
    kpp = (k(prior, prior) * off).sum() / (n * (n - 1))
    return kzz + kpp - 2.0 * k(z, prior).mean()


def mse_n(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's magnitude-normalised parameter MSE, per item: MSE(v̂, v) / mean(v²)."""
    return (pred - target).square().mean(-1) / target.square().mean(-1).clamp(min=1e-8)


def spectral_convergence(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖X - X̂‖_F / ‖X‖_F per item, on spectrograms (B, ..., F)."""
    num = (target - pred).flatten(1).norm(dim=-1)
    return num / target.flatten(1).norm(dim=-1).clamp(min=1e-8)


def spectral_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between spectrograms, per item."""
    return (pred - target).square().flatten(1).mean(-1)
