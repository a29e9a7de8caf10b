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

    def __init__(self, sample_rate: int, hop: int, n_harmonics: int, chunk_samples: int = 2048) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop = hop
        self.n_harmonics = n_harmonics
        self.chunk_samples = chunk_samples
        self.streaming = False
        self.register_buffer(
            "harmonics", torch.arange(1, n_harmonics + 1, dtype=torch.float32), persistent=False
        )
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
            prev_f0 = torch.zeros_like(f0[:, :1])
            prev_amp = torch.zeros_like(amplitude[:, :1])
            prev_dist = torch.zeros_like(distribution[:, :1])
            phase0 = torch.zeros(b, 1, dtype=torch.float64, device=f0.device)
        # a stream (or a zeroed state) starts on its first pitch and fades in from silence over one frame
        prev_f0 = torch.where(prev_f0 > 0, prev_f0, f0[:, :1])

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

        coeffs = torch.stack([start, end - start], dim=-1)  # (B, F, K, 2)
        # frames in chunks of ~chunk_samples so the (samples, K) sine table stays in cache
        step = max(1, self.chunk_samples // self.hop)
        outs: list[torch.Tensor] = []
        for i in range(0, n, step):
            m = min(step, n - i)
            k = self.n_harmonics
            # the kept harmonics are a prefix 1..k_i per frame: skip those muted in the whole chunk (eager
            # and TorchScript; torch.export needs static shapes and computes them all)
            if torch.jit.is_scripting():
                k = max(1, int(mask[:, i : i + m].sum(-1).max()))
            elif not torch.compiler.is_exporting():
                k = max(1, int(mask[:, i : i + m].sum(-1).max()))
            arg = (6.283185307179586 * phase[:, i * self.hop : (i + m) * self.hop]).unsqueeze(-1)
            sines = torch.sin(arg * self.harmonics[:k]).reshape(b * m, self.hop, k)
            # (B*m, hop, 2): sum_k sin_k * start_k and sum_k sin_k * (end_k - start_k)
            both = torch.bmm(sines, coeffs[:, i : i + m, :k].reshape(b * m, k, 2))
            outs.append((both[..., 0] + both[..., 1] * self.ramp).reshape(b, m * self.hop))
        out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

        if self.streaming:
            self.prev_f0 = f0[:, -1:]
            self.prev_amp = amplitude[:, -1:]
            self.prev_dist = distribution[:, -1:]
            self.phase = last_phase
        return out


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
    All three factors are trained. Offline the whole signal is convolved at once (one FFT). Streaming uses a
    uniformly partitioned overlap-save convolution with partitions of ``partition`` samples (the hop): the
    spectra of past input partitions are kept, so a call costs one FFT pair per partition of new input plus
    one complex multiply-add per IR partition, instead of an FFT as long as the IR (48,000 taps at 48 kHz).
    The IR spectra are computed once per streaming session (the weights are frozen while streaming).
    """

    streaming: bool

    def __init__(self, sample_rate: int, length: int, partition: int) -> None:
        super().__init__()
        self.length = length
        self.partition = partition
        self.n_parts = (length + partition - 1) // partition
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
        bins = partition + 1
        self.register_buffer("ir_spectra", torch.zeros(0, bins, dtype=torch.complex64), persistent=False)
        self.register_buffer("history", torch.zeros(0, 0, bins, dtype=torch.complex64), persistent=False)
        self.register_buffer("previous", torch.zeros(0, partition), persistent=False)

    def reset(self) -> None:
        """Fresh streaming state; the IR spectra are computed here, once, when streaming is on (they are
        constants of a stream, not state: forward never reassigns them once set)."""
        bins = self.partition + 1
        device = self.t.device
        self.history = torch.zeros(0, 0, bins, dtype=torch.complex64, device=device)
        self.previous = torch.zeros(0, self.partition, device=device)
        if self.streaming:
            with torch.no_grad():
                self.ir_spectra = self._ir_spectra()
        else:
            self.ir_spectra = torch.zeros(0, bins, dtype=torch.complex64, device=device)

    def _ir_spectra(self) -> torch.Tensor:
        p, n_parts = self.partition, self.n_parts
        ir = nn.functional.pad(self.impulse_response().detach(), (0, n_parts * p - self.length))
        # partition k of the IR zero-padded to 2p (overlap-save), oldest partition first
        return torch.fft.rfft(ir.reshape(n_parts, p), 2 * p).flip(0)

    def impulse_response(self) -> torch.Tensor:
        """(length,) the wet impulse response (first sample 0)."""
        env = torch.exp(-self.rate_scale * nn.functional.softplus(self.decay) * self.t)
        return self.noise * env * torch.sigmoid(self.wet) * self.not_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T), T a multiple of the partition when streaming. Returns: (B, T) dry + wet."""
        if self.streaming:
            return x + self._partitioned(x)
        return x + fft_convolve(x, self.impulse_response())[:, : x.shape[-1]]

    def _partitioned(self, x: torch.Tensor) -> torch.Tensor:
        b, length = x.shape
        p, n_parts = self.partition, self.n_parts
        if length % p:
            raise ValueError(f"streaming reverb needs blocks that are multiples of {p} samples, got {length}")
        if self.ir_spectra.shape[0] == 0:  # streaming switched on without reset()
            self.ir_spectra = self._ir_spectra()
        if self.previous.shape[0] != b:
            self.previous = x.new_zeros(b, p)
            self.history = torch.zeros(b, n_parts - 1, p + 1, dtype=torch.complex64, device=x.device)
        segments = x.reshape(b, length // p, p)
        before = torch.cat([self.previous.unsqueeze(1), segments[:, :-1]], dim=1)
        spectra = torch.fft.rfft(torch.cat([before, segments], dim=-1))  # (B, S, p + 1)
        outs: list[torch.Tensor] = []
        step = 16  # segments per product, to bound memory for long blocks
        for s0 in range(0, spectra.shape[1], step):
            new = spectra[:, s0 : s0 + step]
            every = torch.cat([self.history, new], dim=1)  # (B, n_parts - 1 + S', bins)
            windows = every.unfold(1, n_parts, 1)  # (B, S', bins, n_parts): the spectra each output sees
            acc = (windows * self.ir_spectra.t()).sum(-1)  # (B, S', bins)
            outs.append(torch.fft.irfft(acc, 2 * p)[..., p:])  # overlap-save: keep the last p samples
            self.history = every[:, every.shape[1] - (n_parts - 1) :]
        self.previous = segments[:, -1]
        return torch.cat(outs, dim=1).reshape(b, length)
