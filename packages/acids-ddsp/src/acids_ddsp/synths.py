"""The synthesizers: harmonic additive, filtered noise, trainable reverb. Each streams with its own state.

Every module has ``streaming: bool``. Off (the default), a call processes a whole signal from silence. On,
consecutive calls continue one signal: the state (oscillator phase and last controls, noise position and
filter tails, reverb tail) is carried across calls, and the concatenated output equals the offline output.
Turning streaming on or off (``set_streaming``) starts from a fresh state.
"""


import math

import torch
from torch import nn

from acids_ddsp.dsp import (
    accumulate_phase,
    causal_ramp,
    fft_convolve,
    magnitudes_to_ir,
    next_pow2,
    overlap_add,
    position_noise,
)


def _normalise(dist: torch.Tensor) -> torch.Tensor:
    return dist / dist.sum(dim=-1, keepdim=True).clamp(min=1e-7)


class HarmonicSynth(nn.Module):
    """Additive synthesizer: n harmonics of f0 with a total amplitude and a harmonic distribution.

    * f0 and the amplitudes move with a causal linear ramp inside each frame (no look-ahead, no steps).
    * A harmonic is kept in frame i only if it stays below Nyquist over the whole f0 ramp of the frame; both
      ends of that frame's amplitude ramp use the same mask and are renormalised, so no sample carries energy
      above Nyquist.
    * The phase is accumulated in float64 and wrapped per call (see :func:`~acids_ddsp.dsp.accumulate_phase`).
    * The amplitude ramp is applied with two matrix products per frame instead of upsampling the (B, T, K)
      amplitude tensors.
    """

    streaming: bool

    def __init__(self, sample_rate: int, hop: int, n_harmonics: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop = hop
        self.n_harmonics = n_harmonics
        self.streaming = False
        self.register_buffer("harmonics", torch.arange(1, n_harmonics + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("ramp", torch.arange(1, hop + 1, dtype=torch.float32) / hop, persistent=False)
        self.register_buffer("phase", torch.zeros(0, 1, dtype=torch.float64), persistent=False)
        self.register_buffer("prev_f0", torch.zeros(0, 1), persistent=False)
        self.register_buffer("prev_amp", torch.zeros(0, 1), persistent=False)
        self.register_buffer("prev_dist", torch.zeros(0, 1, n_harmonics), persistent=False)

    def reset(self) -> None:
        self.phase = torch.zeros(0, 1, dtype=torch.float64, device=self.harmonics.device)
        self.prev_f0 = torch.zeros(0, 1, device=self.harmonics.device)
        self.prev_amp = torch.zeros(0, 1, device=self.harmonics.device)
        self.prev_dist = torch.zeros(0, 1, self.n_harmonics, device=self.harmonics.device)

    def forward(self, f0: torch.Tensor, amplitude: torch.Tensor, distribution: torch.Tensor) -> torch.Tensor:
        """Synthesise F frames.

        Args:
            f0: (B, F) fundamental in Hz.
            amplitude: (B, F) total amplitude, >= 0.
            distribution: (B, F, K) relative harmonic amplitudes, >= 0 (normalised here).

        Returns:
            (B, F * hop) audio.
        """
        b, n = f0.shape
        if self.streaming and self.phase.shape[0] == b:
            prev_f0, prev_amp, prev_dist, phase0 = self.prev_f0, self.prev_amp, self.prev_dist, self.phase
        else:
            # a signal starts on its first pitch and fades in from silence over its first frame
            prev_f0 = f0[:, :1]
            prev_amp = torch.zeros_like(amplitude[:, :1])
            prev_dist = distribution[:, :1]
            phase0 = torch.zeros(b, 1, dtype=torch.float64, device=f0.device)

        phase, last_phase = accumulate_phase(
            causal_ramp(f0, prev_f0, self.hop), self.sample_rate, phase0, self.hop
        )

        f0_before = torch.cat([prev_f0, f0[:, :-1]], dim=1)
        peak = torch.maximum(f0_before, f0).unsqueeze(-1)  # (B, F, 1) highest f0 of each frame's ramp
        mask = (peak * self.harmonics < self.sample_rate / 2).to(distribution.dtype)  # (B, F, K)
        amp_before = torch.cat([prev_amp, amplitude[:, :-1]], dim=1)
        dist_before = torch.cat([prev_dist, distribution[:, :-1]], dim=1)
        start = _normalise(dist_before * mask) * amp_before.unsqueeze(-1)  # (B, F, K)
        end = _normalise(distribution * mask) * amplitude.unsqueeze(-1)

        sines = torch.sin((6.283185307179586 * phase).unsqueeze(-1) * self.harmonics)  # (B, T, K)
        sines = sines.reshape(b * n, self.hop, self.n_harmonics)
        coeffs = torch.stack([start, end - start], dim=-1).reshape(b * n, self.n_harmonics, 2)
        both = torch.bmm(sines, coeffs)  # (B*F, hop, 2): sum_k sin * start_k, sum_k sin * delta_k
        out = both[..., 0] + both[..., 1] * self.ramp

        if self.streaming:
            self.prev_f0 = f0[:, -1:]
            self.prev_amp = amplitude[:, -1:]
            self.prev_dist = distribution[:, -1:]
            self.phase = last_phase
        return out.reshape(b, n * self.hop)


class FilteredNoise(nn.Module):
    """White noise through a time-varying FIR filter per frame, with the filter tails overlap-added.

    Each frame's ``hop`` noise samples are convolved with that frame's linear-phase FIR
    (2 * (n_bands - 1) taps, delay n_bands - 1 samples); the full convolution (hop + taps - 1 samples) is
    overlap-added, so a frame's tail rings into the next frames instead of being cut (ddsp_pytorch drops it).
    In training mode the noise is ``torch.rand``; in eval mode it is a hash of the absolute sample position
    (same for every batch item), so streamed output equals offline output.
    """

    streaming: bool

    def __init__(self, hop: int, n_bands: int, seed: int = 0) -> None:
        super().__init__()
        self.hop = hop
        self.n_bands = n_bands
        self.taps = 2 * (n_bands - 1)
        self.seed = seed
        self.fft_size = next_pow2(hop + self.taps - 1)
        self.streaming = False
        self.register_buffer("position", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("tail", torch.zeros(0, 0), persistent=False)

    def reset(self) -> None:
        self.position = torch.zeros((), dtype=torch.int64, device=self.position.device)
        self.tail = torch.zeros(0, 0, device=self.position.device)

    def noise(self, batch: int, length: int, start: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.rand(batch, length, device=start.device) * 2.0 - 1.0
        return position_noise(start, length, self.seed).expand(batch, length)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Args: magnitudes (B, F, n_bands) >= 0. Returns: (B, F * hop) audio."""
        b, n, _ = magnitudes.shape
        length = n * self.hop
        fresh = not (self.streaming and self.tail.shape[0] == b)
        start = torch.zeros_like(self.position) if fresh else self.position
        frames = self.noise(b, length, start).reshape(b, n, self.hop)
        ir = magnitudes_to_ir(magnitudes)  # (B, F, taps)
        spec = torch.fft.rfft(frames, self.fft_size) * torch.fft.rfft(ir, self.fft_size)
        filtered = torch.fft.irfft(spec, self.fft_size)[..., : self.hop + self.taps - 1]
        out = overlap_add(filtered, self.hop)  # (B, length + ring)
        if self.streaming:
            if not fresh:
                out = out + nn.functional.pad(self.tail, (0, out.shape[-1] - self.tail.shape[-1]))
            self.tail = out[:, length:]
            self.position = start + length
        return out[:, :length]


class Reverb(nn.Module):
    """A trainable reverb: dry signal + convolution with a learned impulse response.

    IR = learned noise × exp(-rate·t) × wet gain, with its first sample zero (the dry path is added exactly).
    All three factors are trained. Offline the whole signal is convolved at once (FFT); streaming carries the
    reverb tail of past blocks into the next ones.
    """

    streaming: bool

    def __init__(self, sample_rate: int, length: int) -> None:
        super().__init__()
        self.length = length
        self.streaming = False
        rate0 = 10.0  # initial decay rate (1/s): -87 dB after one second
        gen = torch.Generator().manual_seed(1234)
        # noise scaled so the initial IR has the energy of its wet gain (sum of env^2 ≈ sr / (2 rate0))
        self.noise = nn.Parameter(torch.randn(length, generator=gen) * math.sqrt(2.0 * rate0 / sample_rate))
        self.decay = nn.Parameter(torch.tensor(math.log(math.expm1(1.0))))  # softplus = 1 → rate0
        self.wet = nn.Parameter(torch.tensor(-2.0))  # sigmoid ≈ 0.12, about -18 dB
        self.rate_scale = rate0
        t = torch.arange(length, dtype=torch.float32) / sample_rate
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("not_first", (torch.arange(length) > 0).to(torch.float32), persistent=False)
        self.register_buffer("tail", torch.zeros(0, 0), persistent=False)

    def reset(self) -> None:
        self.tail = torch.zeros(0, 0, device=self.t.device)

    def impulse_response(self) -> torch.Tensor:
        """(length,) the wet impulse response (first sample 0)."""
        env = torch.exp(-self.rate_scale * nn.functional.softplus(self.decay) * self.t)
        return self.noise * env * torch.sigmoid(self.wet) * self.not_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T). Returns: (B, T) dry + wet."""
        length = x.shape[-1]
        wet = fft_convolve(x, self.impulse_response())  # (B, T + L - 1)
        if self.streaming:
            if self.tail.shape[0] == x.shape[0]:
                wet = wet + nn.functional.pad(self.tail, (0, wet.shape[-1] - self.tail.shape[-1]))
            self.tail = wet[:, length:]
        return x + wet[:, :length]
