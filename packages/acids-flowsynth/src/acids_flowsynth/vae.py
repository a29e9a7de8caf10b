"""Building blocks: MLP stacks, the strided dilated convolutional encoder, and its mirrored decoder."""

from __future__ import annotations

import torch
from torch import nn


def mlp(n_in: int, hidden: int, layers: int, n_out: int, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` x (Linear, BatchNorm, ELU, Dropout), then a Linear to ``n_out`` (the paper's MLPs)."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ELU()]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


def _conv_out(n: int, kernel: int, dilation: int) -> int:
    pad = dilation * (kernel - 1) // 2
    return (n + 2 * pad - dilation * (kernel - 1) - 1) // 2 + 1


class ConvEncoder(nn.Module):
    """(B, 1, H, W) → (B, channels * h * w): ``layers`` x (Conv2d stride 2, dilation 2^l, BN, ELU).

    Attributes:
        out_shape: (channels, h, w) of the last feature map; ``out_features`` its size.
    """

    def __init__(self, height: int, width: int, channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        c_in, h, w = 1, height, width
        for layer in range(layers):
            d = 2**layer
            mods += [
                nn.Conv2d(c_in, channels, kernel, stride=2, dilation=d, padding=d * (kernel - 1) // 2),
                nn.BatchNorm2d(channels),
                nn.ELU(),
            ]
            c_in, h, w = channels, _conv_out(h, kernel, d), _conv_out(w, kernel, d)
            if h < 1 or w < 1:
                raise ValueError(f"{layers} stride-2 layers are too many for a {height}x{width} input")
        self.net = nn.Sequential(*mods)
        self.out_shape = (channels, h, w)
        self.out_features = channels * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    """z (B, D) → (B, 1, H, W): an MLP to the encoder's last map shape, then ``layers`` x (upsample x2,
    Conv2d, BN, ELU), a final Conv2d to one channel, and a resize to exactly H x W."""

    def __init__(
        self,
        latent: int,
        hidden: int,
        shape: tuple[int, int, int],
        layers: int,
        kernel: int,
        size: tuple[int, int],
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.size = size
        self.head = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, c * h * w), nn.ELU())
        mods: list[nn.Module] = []
        for _ in range(layers):
            mods += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c, kernel, padding=kernel // 2),
                nn.BatchNorm2d(c),
                nn.ELU(),
            ]
        mods.append(nn.Conv2d(c, 1, kernel, padding=kernel // 2))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.head(z).view(z.shape[0], *self.shape)
        x = self.net(x)
        return nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
