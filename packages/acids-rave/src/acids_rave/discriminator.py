"""Discriminators: multi-scale (waveform at several rates), multi-period (2-d on folded waveforms),
optional multi-resolution spectral. Each sub-discriminator returns its list of features, the last
being the score map; :class:`Discriminator` returns one such list per sub-discriminator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from acids_rave.config import DiscriminatorConfig
from acids_rave.losses import stft_magnitude


def _feature_maps(layers: nn.ModuleList, score: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every hidden activation (leaky ReLU 0.2) for feature matching, then the score map."""
    feats = []
    for layer in layers:
        x = F.leaky_relu(layer(x), 0.2)
        feats.append(x)
    feats.append(score(x))
    return feats


class ConvNet1d(nn.Module):
    """Strided 1-d convs (kernel 15, stride 4), channels capacity * 2^i, then a score conv."""

    def __init__(self, in_channels: int, capacity: int, n_layers: int):
        super().__init__()
        layers = []
        c = in_channels
        for i in range(n_layers):
            out = capacity * 2**i
            layers.append(weight_norm(nn.Conv1d(c, out, 15, stride=4, padding=7)))
            c = out
        self.layers = nn.ModuleList(layers)
        self.score = weight_norm(nn.Conv1d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _feature_maps(self.layers, self.score, x)


class ConvNet2d(nn.Module):
    """Period discriminator: the waveform folded to (B, C, T / p, p), convs (5, 1) stride (4, 1)."""

    def __init__(self, in_channels: int, capacity: int, n_layers: int, period: int):
        super().__init__()
        self.period = period
        layers = []
        c = in_channels
        for i in range(n_layers):
            out = capacity * 2**i
            layers.append(weight_norm(nn.Conv2d(c, out, (5, 1), stride=(4, 1), padding=(2, 0))))
            c = out
        self.layers = nn.ModuleList(layers)
        self.score = weight_norm(nn.Conv2d(c, 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(
                x, (0, self.period - t % self.period), mode="reflect" if t > self.period else "constant"
            )
        x = x.reshape(b, c, -1, self.period)
        return _feature_maps(self.layers, self.score, x)


class SpectralConvNet(nn.Module):
    """Discriminator on the log-magnitude STFT (frequency bins as channels)."""

    def __init__(self, in_channels: int, capacity: int, n_layers: int, n_fft: int):
        super().__init__()
        self.n_fft = n_fft
        self.in_channels = in_channels
        self.net = ConvNet1d(in_channels * (n_fft // 2 + 1), capacity, n_layers)
        # the time axis is already decimated by the hop; strides of 4 would leave nothing
        for layer in self.net.layers:
            layer.stride = (1,)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = x.shape[0]
        mag = stft_magnitude(x, self.n_fft)
        mag = torch.log(mag + 1e-5).reshape(b, -1, mag.shape[-1])
        return self.net(mag)


class Discriminator(nn.Module):
    """All sub-discriminators of a config; ``forward`` -> list (per sub-discriminator) of feature lists."""

    def __init__(self, cfg: DiscriminatorConfig, channels: int = 1):
        super().__init__()
        subs: list[nn.Module] = [ConvNet1d(channels, cfg.capacity, cfg.n_layers) for _ in range(cfg.n_scales)]
        self.n_scales = cfg.n_scales
        subs += [ConvNet2d(channels, cfg.capacity, cfg.n_layers, p) for p in cfg.periods]
        subs += [SpectralConvNet(channels, cfg.capacity, cfg.n_layers, n) for n in cfg.spectral_scales]
        self.subs = nn.ModuleList(subs)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        scaled = x
        for i, sub in enumerate(self.subs):
            if i < self.n_scales:
                if i > 0:
                    scaled = F.avg_pool1d(scaled, 4, stride=2, padding=1, count_include_pad=False)
                out.append(sub(scaled))
            else:
                out.append(sub(x))
        return out
