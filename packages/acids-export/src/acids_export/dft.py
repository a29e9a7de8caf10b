"""The short-time Fourier transform as a strided convolution with a windowed DFT basis.

TensorRT's parser has no STFT/DFT (any Jetson version) and opset 13 has neither, so while exporting for
such a profile :func:`stft_as_convolution` replaces ``torch.stft`` with :func:`conv_stft`, which is built
from Conv, Pad, Slice, Reshape and Mul only. It supports the real-valued form
(``return_complex=False``: ``(..., n_fft // 2 + 1, frames, 2)``), which is what a traced graph can carry;
complex outputs have no ONNX type. Model code needs no change.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

_torch_stft = torch.stft


def dft_basis(n_fft: int, window: torch.Tensor | None, win_length: int | None) -> torch.Tensor:
    """(2 * bins, 1, n_fft): the windowed cosine rows, then the windowed minus-sine rows.

    Computed in numpy, so a traced graph holds it as a constant (ONNX Conv needs a known kernel).
    """
    win_length = win_length or n_fft
    w = np.ones(win_length) if window is None else window.detach().cpu().double().numpy()
    left = (n_fft - win_length) // 2
    w = np.pad(w, (left, n_fft - win_length - left))
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * k * np.arange(n_fft)[None, :] / n_fft
    basis = np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])[:, None, :]
    return torch.from_numpy(basis.astype(np.float32))


def conv_stft(
    x: torch.Tensor,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    pad_mode: str = "reflect",
    normalized: bool = False,
    onesided: bool | None = None,
    return_complex: bool | None = None,
) -> torch.Tensor:
    """``torch.stft(..., return_complex=False)`` of a real (T,) or (B, T) signal, by convolution."""
    if return_complex:
        raise ValueError("the DFT-by-convolution STFT returns real (..., 2) output: use return_complex=False")
    if onesided is False:
        raise ValueError("the DFT-by-convolution STFT is one-sided")
    hop = hop_length or n_fft // 4
    squeeze = x.dim() == 1
    y = x.reshape(1, 1, -1) if squeeze else x.unsqueeze(1)
    if center:
        y = F.pad(y, (n_fft // 2, n_fft // 2), mode=pad_mode)
    basis = dft_basis(n_fft, window, win_length).to(y.dtype)
    spec = F.conv1d(y, basis, stride=hop)  # (B, 2 * bins, frames)
    if normalized:
        spec = spec * (1.0 / math.sqrt(n_fft))
    bins = n_fft // 2 + 1
    out = torch.stack([spec[:, :bins], spec[:, bins:]], dim=-1)  # (B, bins, frames, 2)
    return out[0] if squeeze else out


@contextlib.contextmanager
def stft_as_convolution(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``torch.stft`` is :func:`conv_stft` (for tracing an export)."""
    if not enabled:
        yield
        return
    torch.stft = conv_stft
    try:
        yield
    finally:
        torch.stft = _torch_stft
