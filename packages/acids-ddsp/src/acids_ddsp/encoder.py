"""The MFCC encoder of the autoencoder variant: audio → latent z, one vector per synthesis frame.

As the DDSP paper's z encoder (MFCCs of a log-mel spectrogram, a normalisation, a GRU, a linear layer),
made causal and frame-aligned: frame i analyses the ``n_fft`` samples ending with its own hop,
``[(i + 1) * hop - n_fft, (i + 1) * hop)``, so z[i] depends on audio up to the end of frame i only (the
samples frame i synthesises) and the encoder streams block by block with ``n_fft - hop`` samples of audio
history and the GRU state as its state. The normalisation is a LayerNorm over each frame's MFCCs (magenta
normalises over time, which no stream can do).

While tracing or exporting (:func:`~acids_ddsp.dsp.graph_mode`) the FFT is a constant matmul with the
windowed real-DFT matrix, as the synths do: the graph has no DFT/STFT or complex type.
"""

import functools
import math

import numpy as np
import torch
from torch import nn

from acids_ddsp.config import DDSPConfig
from acids_ddsp.dsp import graph_mode, rdft_basis

LOG_EPS = 1e-5  # magenta's safe_log floor on the mel magnitudes
MEL_FMIN = 20.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float = MEL_FMIN) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32 triangular filters on the HTK mel scale, fmin to Nyquist, peak 1
    (magenta's ``linear_to_mel_weight_matrix`` form: ``magnitudes @ matrix`` are the mel magnitudes)."""
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(fmin)), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lo[None]) / (centre - lo)[None]
    falling = (hi[None] - bins[:, None]) / (hi - centre)[None]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) float32 orthonormal DCT-II: ``x @ m`` = ``scipy.fft.dct(x, norm="ortho")[:n_out]``."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[:, 0] /= math.sqrt(2.0)
    return m.astype(np.float32)


class MfccEncoder(nn.Module):
    """Audio (B, T) or (B, 1, T), T a multiple of the hop → z (B, T // hop, z_dim).

    State when ``streaming``: the last ``n_fft - hop`` input samples and the GRU state (float32, reassigned
    each call; zero-filled state = a fresh stream, whose past is silence).
    """

    streaming: bool

    def __init__(self, cfg: DDSPConfig) -> None:
        super().__init__()
        e = cfg.encoder
        self.hop = cfg.hop
        self.n_fft = e.n_fft
        self.log_eps = LOG_EPS
        self.blocks = e.n_fft // cfg.hop  # hops per analysis window
        self.bins = e.n_fft // 2 + 1
        window = torch.hann_window(e.n_fft, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)
        basis = torch.from_numpy(rdft_basis(e.n_fft)).double() * window[:, None]
        self.register_buffer("dft", basis.float(), persistent=False)  # windowed real DFT (graph mode)
        mel = torch.from_numpy(mel_matrix(cfg.sample_rate, e.n_fft, e.n_mels))
        self.register_buffer("mel", mel, persistent=False)
        self.register_buffer("dct", torch.from_numpy(dct_matrix(e.n_mels, e.n_mfcc)), persistent=False)
        self.norm = nn.LayerNorm(e.n_mfcc)
        self.gru = nn.GRU(e.n_mfcc, e.gru, batch_first=True)
        self.proj = nn.Linear(e.gru, e.z_dim)
        self.streaming = False
        self.register_buffer("history", torch.zeros(0, 0), persistent=False)
        self.register_buffer("state", torch.zeros(1, 0, e.gru), persistent=False)

    def reset(self) -> None:
        self.history = torch.zeros(0, 0, device=self.window.device)
        self.state = torch.zeros(1, 0, self.gru.hidden_size, device=self.window.device)

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, T // hop, n_fft) analysis frames (past from the stream history or silence)."""
        b = audio.shape[0]
        n = audio.shape[-1] // self.hop
        past = (self.blocks - 1) * self.hop
        if self.streaming and self.history.shape[0] == b:
            history = self.history
        else:
            history = audio.new_zeros(b, past)
        padded = torch.cat([history, audio[:, : n * self.hop]], dim=-1)
        if self.streaming:
            self.history = padded[:, padded.shape[-1] - past :]
        hops = padded.reshape(b, n + self.blocks - 1, self.hop)
        # window i is hops i .. i + blocks - 1 (slices, not unfold: the length stays dynamic in a graph)
        return torch.cat([hops[:, j : j + n] for j in range(self.blocks)], dim=-1)

    def mfcc(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, T // hop, n_mfcc) MFCCs of the causal frames (before the normalisation)."""
        frames = self.frames(audio)
        if graph_mode():
            spec = torch.matmul(frames, self.dft).reshape(frames.shape[0], frames.shape[1], self.bins, 2)
            mag = torch.sqrt(spec[..., 0] ** 2 + spec[..., 1] ** 2)
        else:
            mag = torch.fft.rfft(frames * self.window).abs()
        logmel = torch.log(torch.matmul(mag, self.mel).clamp(min=self.log_eps))
        return torch.matmul(logmel, self.dct)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() == 3:
            audio = audio.mean(dim=1)
        h = self.norm(self.mfcc(audio))
        if self.streaming and self.state.shape[1] == audio.shape[0]:
            g, state = self.gru(h, self.state)
        else:
            g, state = self.gru(h)
        if self.streaming:
            self.state = state
        return self.proj(g)
