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

    def __init__(
        self, height: int, width: int, channels: int, layers: int, kernel: int, residual: bool = False
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c_in, h, w = 1, height, width
        for layer in range(layers):
            d = 2**layer
            h2, w2 = _conv_out(h, kernel, d), _conv_out(w, kernel, d)
            if h2 < 1 or w2 < 1:
                raise ValueError(f"{layers} stride-2 layers are too many for a {height}x{width} input")
            main = nn.Sequential(
                nn.Conv2d(c_in, channels, kernel, stride=2, dilation=d, padding=d * (kernel - 1) // 2),
                nn.BatchNorm2d(channels),
                nn.ELU(),
            )
            blocks.append(_Residual(main, c_in, channels, (h, w), (h2, w2)) if residual else main)
            c_in, h, w = channels, h2, w2
        self.net = nn.Sequential(*blocks)
        self.out_shape = (channels, h, w)
        self.out_features = channels * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class _Residual(nn.Module):
    """``main(x) + shortcut(x)``: the shortcut is a strided 1x1 convolution (the paper's ResNet baseline:
    "the CNN with 1x1-convolution residual paths"), cropped or zero-padded to ``main``'s output size."""

    def __init__(
        self, main: nn.Module, c_in: int, c_out: int, size_in: tuple[int, int], size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.main = main
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2)
        h, w = ((n - 1) // 2 + 1 for n in size_in)  # the shortcut's output size
        # (left, right, top, bottom) padding; negative values crop (static: traces and exports cleanly)
        self.pad = (0, size[1] - w, 0, size[0] - h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + nn.functional.pad(self.shortcut(x), self.pad)


class ConvDecoder(nn.Module):
    """z (B, D) → (B, 1, H, W): the encoder mirrored. An MLP to the encoder's last map shape, then
    ``layers`` transposed convolutions (stride 2, dilation 2^l in reverse order, BN + ELU between them; the
    last one goes to one channel), and a resize to exactly H x W.

    Transposed convolutions work at the input resolution of each layer, so this costs about a tenth of
    upsample-then-convolve at the same width (the decoder was 95 % of an auto-encoder's CPU time).
    """

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
        for layer in reversed(range(layers)):
            d = 2**layer
            c_out = 1 if layer == 0 else c
            pad = d * (kernel - 1) // 2
            # output = 2 * input when d * (kernel - 1) is even (odd kernels); the resize fixes the rest
            mods.append(
                nn.ConvTranspose2d(c, c_out, kernel, stride=2, dilation=d, padding=pad, output_padding=1)
            )
            if layer:
                mods += [nn.BatchNorm2d(c), nn.ELU()]
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.head(z).view(z.shape[0], *self.shape)
        x = self.net(x)
        return nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
