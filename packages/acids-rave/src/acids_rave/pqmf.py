"""Pseudo-quadrature mirror filter bank (PQMF): M-band analysis and near-perfect synthesis.

The prototype is a Kaiser-windowed sinc low-pass whose cut-off is tuned (golden-section search, numpy
only) so that its autocorrelation vanishes at the non-zero multiples of 2M, the PQMF condition for
cancelling the aliasing between neighbouring bands. Both directions are polyphase convolutions:

* analysis: a stride-M convolution with N = M * K taps, (B, C, T) -> (B, C * M, T / M);
* synthesis: a K-tap convolution over band frames to M polyphase outputs, interleaved to samples.

Causal mode pads on the left only: band frame n depends on samples up to the end of input block n,
output block n on band frames up to n, and the cascade is the input delayed by N - M samples. The
offline (non-causal) mode splits the padding so that the cascade has no delay. In streaming mode the
left context comes from a cache instead of zeros (see :class:`acids_rave.blocks.CachedPad`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from acids_rave.blocks import CachedPad


def _kaiser_lowpass(n_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """A windowed-sinc low-pass; ``cutoff`` in radians/sample."""
    t = np.arange(n_taps) - (n_taps - 1) / 2
    h = cutoff / math.pi * np.sinc(cutoff / math.pi * t)
    return h * np.kaiser(n_taps, beta)


def _aliasing_error(h: np.ndarray, n_band: int) -> float:
    p = np.convolve(h, h[::-1])
    centre = len(p) // 2
    side = p[centre + 2 * n_band :: 2 * n_band]
    return float(np.abs(side).max() / p[centre])


@functools.lru_cache(maxsize=16)
def prototype(n_band: int, n_taps: int, beta: float) -> np.ndarray:
    """The PQMF prototype low-pass (float64, length ``n_taps``), cut-off tuned near pi / (2 M)."""
    lo, hi = 0.5 * math.pi / (2 * n_band), 1.5 * math.pi / (2 * n_band)
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa = _aliasing_error(_kaiser_lowpass(n_taps, a, beta), n_band)
    fb = _aliasing_error(_kaiser_lowpass(n_taps, b, beta), n_band)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _aliasing_error(_kaiser_lowpass(n_taps, a, beta), n_band)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _aliasing_error(_kaiser_lowpass(n_taps, b, beta), n_band)
    return _kaiser_lowpass(n_taps, (lo + hi) / 2, beta)


def filter_bank(n_band: int, n_taps: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Analysis and synthesis filters, each (M, N), cosine modulations of :func:`prototype`."""
    h = prototype(n_band, n_taps, beta)
    k = np.arange(n_band)[:, None]
    t = np.arange(n_taps)[None, :] - (n_taps - 1) / 2
    phase = (2 * k + 1) * math.pi / (2 * n_band) * t
    sign = (-1.0) ** k * math.pi / 4
    analysis = 2 * h * np.cos(phase + sign)
    synthesis = 2 * h * np.cos(phase - sign)
    return analysis, synthesis


class PQMF(nn.Module):
    """M-band PQMF; ``forward`` is the analysis, :meth:`inverse` the synthesis.

    Args:
        n_band: number of bands M (a power of two; 16 in RAVE).
        taps_per_band: K, the filter length is N = M * K.
        beta: Kaiser window shape of the prototype.
        causal: pad on the left only (streamable); otherwise centre the filters (no delay, offline).
    """

    def __init__(self, n_band: int = 16, taps_per_band: int = 16, beta: float = 9.0, causal: bool = True):
        super().__init__()
        if n_band < 2 or n_band & (n_band - 1):
            raise ValueError(f"n_band must be a power of two >= 2, got {n_band}")
        if taps_per_band < 2:
            raise ValueError("taps_per_band must be >= 2")
        self.n_band = n_band
        self.causal = causal
        n_taps = n_band * taps_per_band
        analysis, synthesis = filter_bank(n_band, n_taps, beta)
        # conv1d correlates, so the analysis kernel is the time-reversed filter: (M, 1, N)
        w_a = torch.from_numpy(analysis[:, ::-1].copy()).float().unsqueeze(1)
        # synthesis polyphase kernel (M phases, M bands, K): w[j, k, i] = g_k[M (K - 1 - i) + j]
        g = synthesis.reshape(n_band, taps_per_band, n_band)  # [k, m, j] = g_k[M m + j]
        w_s = np.ascontiguousarray(g[:, ::-1, :].transpose(2, 0, 1)) * n_band
        self.register_buffer("analysis_weight", w_a, persistent=False)
        self.register_buffer("synthesis_weight", torch.from_numpy(w_s).float(), persistent=False)
        pad_a = n_taps - n_band  # samples of context of one analysis frame
        pad_s = taps_per_band - 1  # band frames of context of one synthesis block
        if causal:
            right_a, right_s = 0, 0
        else:
            right_s = pad_s // 2
            right_a = n_band * (pad_s - right_s)
        self.analysis_pad = CachedPad(pad_a - right_a, right_a)
        self.synthesis_pad = CachedPad(pad_s - right_s, right_s)
        #: delay (samples) of analysis followed by synthesis
        self.delay = pad_a if causal else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C * M, T / M); T must be a multiple of M."""
        b, c, t = x.shape
        if t % self.n_band != 0:
            raise ValueError("PQMF input length must be a multiple of n_band")
        x = self.analysis_pad(x.reshape(b * c, 1, t))
        y = nn.functional.conv1d(x, self.analysis_weight, stride=self.n_band)
        return y.reshape(b, c * self.n_band, t // self.n_band)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C * M, F) -> (B, C, F * M)."""
        b, cm, f = x.shape
        c = cm // self.n_band
        x = self.synthesis_pad(x.reshape(b * c, self.n_band, f))
        y = nn.functional.conv1d(x, self.synthesis_weight)  # (B C, M phases, F)
        return y.transpose(1, 2).reshape(b, c, f * self.n_band)
