"""The synthesizers: harmonic additive, filtered noise, trainable reverb. Each streams with its own state.

Every module has ``streaming: bool``. Off (the default), a call processes a whole signal from silence. On,
consecutive calls continue one signal: the state (oscillator phase and last controls, noise position and
filter tails, reverb tail) is carried across calls, and the concatenated output equals the offline output.
Turning streaming on or off (``set_streaming``) starts from a fresh state.

The state is float32 tensors only, reassigned (never mutated in place), and a zero-filled state of the
materialised shapes is a fresh stream: what acids-export needs to make it explicit ONNX inputs/outputs.
While tracing or exporting (:func:`~acids_ddsp.dsp.graph_mode`) the FFTs become constant matmuls and
gathers, so the exported graph has no DFT/STFT, Mod or bitwise operator.
"""

import math

import torch
from torch import nn

from acids_ddsp.dsp import (
    NOISE_PERIODS,
    accumulate_phase,
    causal_ramp,
    fft_convolve,
    frame_convolve,
    frame_convolve_direct,
    graph_mode,
    ir_basis,
    irdft_tail_basis,
    magnitudes_to_ir,
    next_pow2,
    noise_table,
    overlap_add,
    rdft_basis,
    table_noise,
)


def _normalise(dist: torch.Tensor) -> torch.Tensor:
    return dist / dist.sum(dim=-1, keepdim=True).clamp(min=1e-7)


class HarmonicSynth(nn.Module):
    """Additive synthesizer: n harmonics of f0 with a total amplitude and a harmonic distribution.

    * f0 and the amplitudes move with a causal linear ramp inside each frame (no look-ahead, no steps).
    * A harmonic is kept in frame i only if it stays below Nyquist over the whole f0 ramp of the frame; both
      ends of that frame's amplitude ramp use the same mask and are renormalised, so no sample carries energy
      above Nyquist.
    * The phase is accumulated in float64 and wrapped per call (see :func:`~acids_ddsp.dsp.accumulate_phase`);
      between calls it is kept as two float32 (high part and remainder: 48 bits of the wrapped phase).
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
        self.register_buffer("phase", torch.zeros(0, 2), persistent=False)
        self.register_buffer("prev_f0", torch.zeros(0, 1), persistent=False)
        # 1 once a stream has produced a block (0: the next block starts on its own first pitch)
        self.register_buffer("started", torch.zeros(0, 1), persistent=False)
        self.register_buffer("prev_amp", torch.zeros(0, 1), persistent=False)
        self.register_buffer("prev_dist", torch.zeros(0, 1, n_harmonics), persistent=False)

    def reset(self) -> None:
        self.phase = torch.zeros(0, 2, device=self.harmonics.device)
        self.prev_f0 = torch.zeros(0, 1, device=self.harmonics.device)
        self.started = torch.zeros(0, 1, device=self.harmonics.device)
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
            prev_f0, prev_amp, prev_dist = self.prev_f0, self.prev_amp, self.prev_dist
            phase0 = self.phase[:, :1].to(torch.float64) + self.phase[:, 1:].to(torch.float64)
            started = self.started
        else:
            prev_f0 = torch.zeros_like(f0[:, :1])
            started = torch.zeros_like(f0[:, :1])
            prev_amp = torch.zeros_like(amplitude[:, :1])
            prev_dist = torch.zeros_like(distribution[:, :1])
            phase0 = torch.zeros(b, 1, dtype=torch.float64, device=f0.device)
        # a stream (or a zeroed state) starts on its first pitch and fades in from silence over one frame
        prev_f0 = torch.where(started > 0, prev_f0, f0[:, :1])

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
        exporting = graph_mode()
        if exporting:  # one chunk: a traced loop would be unrolled for the traced length only
            step = n
        outs: list[torch.Tensor] = []
        for i in range(0, n, step):
            m = min(step, n - i)
            k = self.n_harmonics
            # the kept harmonics are a prefix 1..k_i per frame: skip those muted in the whole chunk (eager
            # and TorchScript; traced and exported graphs need static shapes and compute them all)
            if not exporting:
                k = max(1, int(mask[:, i : i + m].sum(-1).max()))
            arg = (6.283185307179586 * phase[:, i * self.hop : (i + m) * self.hop]).unsqueeze(-1)
            sines = torch.sin(arg * self.harmonics[:k]).reshape(b * m, self.hop, k)
            # (B*m, 2, hop): sum_k start_k * sin_k and sum_k (end_k - start_k) * sin_k, as
            # (2, k) @ (k, hop) per frame (transposed views: this product shape runs ~1.7x faster than
            # (hop, k) @ (k, 2))
            both = torch.bmm(
                coeffs[:, i : i + m, :k].reshape(b * m, k, 2).transpose(1, 2), sines.transpose(1, 2)
            )
            outs.append((both[:, 0] + both[:, 1] * self.ramp).reshape(b, m * self.hop))
        out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

        if self.streaming:
            self.prev_f0 = f0[:, -1:]
            self.started = torch.ones_like(started)
            self.prev_amp = amplitude[:, -1:]
            self.prev_dist = distribution[:, -1:]
            high = last_phase.to(torch.float32)
            self.phase = torch.cat([high, (last_phase - high.to(torch.float64)).to(torch.float32)], dim=1)
        return out


class FilteredNoise(nn.Module):
    """White noise through a time-varying FIR filter per frame, with the filter tails overlap-added.

    Each frame's ``hop`` noise samples are convolved with that frame's linear-phase FIR
    (2 * (n_bands - 1) taps, delay n_bands - 1 samples); the full convolution (hop + taps - 1 samples) is
    overlap-added, so a frame's tail rings into the next frames instead of being cut (ddsp_pytorch drops it).
    In training mode the noise is ``torch.rand``; in eval mode it is a pure function of the absolute sample
    position (:func:`~acids_ddsp.dsp.table_noise`, same for every batch item), so streamed output equals
    offline output. State: the position's residues (3 small integers as float32) and the filter tail.

    Data-parallel training sets ``shard``/``shards``: each rank draws the noise of the whole global batch
    from the same RNG state and keeps its rows (``shard::shards``), so a run on N processes sees the same
    noise as one process on the global batch.
    """

    streaming: bool
    shard: int
    shards: int

    def __init__(self, hop: int, n_bands: int, seed: int = 0) -> None:
        super().__init__()
        self.hop = hop
        self.n_bands = n_bands
        self.taps = 2 * (n_bands - 1)
        self.seed = seed
        self.fft_size = next_pow2(hop + self.taps - 1)
        self.streaming = False
        self.shard, self.shards = 0, 1
        p = NOISE_PERIODS
        self.register_buffer("table", noise_table(seed), persistent=False)
        self.register_buffer("periods", torch.tensor(p, dtype=torch.int64).unsqueeze(1), persistent=False)
        offsets = torch.tensor([0, p[0], p[0] + p[1]], dtype=torch.int64).unsqueeze(1)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("basis", ir_basis(n_bands), persistent=False)
        self.register_buffer("counters", torch.zeros(3), persistent=False)
        self.register_buffer("tail", torch.zeros(0, 0), persistent=False)

    def reset(self) -> None:
        self.counters = torch.zeros(3, device=self.table.device)
        self.tail = torch.zeros(0, 0, device=self.table.device)

    def noise(self, batch: int, length: int, counters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, length) noise from the position ``counters``, and the counters after it."""
        if self.training:
            noise = torch.rand(batch * self.shards, length, device=counters.device)[self.shard :: self.shards]
            return noise * 2.0 - 1.0, counters
        noise, after = table_noise(self.table, self.periods, self.offsets, counters, length)
        return noise.expand(batch, length), after

    @torch.jit.unused
    def _convolve_direct(self, frames: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return frame_convolve_direct(frames, ir)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Args: magnitudes (B, F, n_bands) >= 0. Returns: (B, F * hop) audio."""
        b, n, _ = magnitudes.shape
        length = n * self.hop
        fresh = not (self.streaming and self.tail.shape[0] == b)
        counters = torch.zeros_like(self.counters) if fresh else self.counters
        noise, after = self.noise(b, length, counters)
        frames = noise.reshape(b, n, self.hop)
        ir = magnitudes_to_ir(magnitudes, self.basis)  # (B, F, taps)
        if graph_mode():
            filtered = self._convolve_direct(frames, ir)
        else:
            filtered = frame_convolve(frames, ir, self.fft_size)
        out = overlap_add(filtered, self.hop)  # (B, length + ring)
        if self.streaming:
            if not fresh:
                out = out + nn.functional.pad(self.tail, (0, out.shape[-1] - self.tail.shape[-1]))
            self.tail = out[:, length:]
            self.counters = after
        return out[:, :length]


class Reverb(nn.Module):
    """A trainable reverb: dry signal + convolution with a learned impulse response.

    IR = learned noise × exp(-rate·t) × wet gain, with its first sample zero (the dry path is added exactly).
    All three factors are trained. Offline the whole signal is convolved at once (one FFT). Streaming uses a
    uniformly partitioned overlap-save convolution with partitions of ``partition`` samples (the hop): the
    spectra of past input partitions are kept, so a call costs one FFT pair per partition of new input plus
    one complex multiply-add per IR partition, instead of an FFT as long as the IR (48,000 taps at 48 kHz).
    The multiply-add over partitions is a grouped ``conv1d`` on real (re, im) channel pairs, and the state
    (last input partition, spectra of the previous ones) is real float32. The IR spectra are computed once
    per streaming session (the weights are frozen while streaming). Traced/exported graphs use the
    partitioned form offline too, with DFTs as constant matmuls.
    """

    streaming: bool

    def __init__(self, sample_rate: int, length: int, partition: int) -> None:
        super().__init__()
        self.length = length
        self.partition = partition
        self.bins = partition + 1
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
        # constants of a stream: (n_parts, bins, 2) real view of the IR partitions' spectra, oldest first
        self.register_buffer("ir_spectra", torch.zeros(0, self.bins, 2), persistent=False)
        # state: the last input partition, and the (re, im) spectra of the previous n_parts - 1 windows
        self.register_buffer("history", torch.zeros(0, 0, self.bins, 2), persistent=False)
        self.register_buffer("previous", torch.zeros(0, partition), persistent=False)

    def reset(self) -> None:
        """Fresh streaming state; the IR spectra are computed here, once, when streaming is on (they are
        constants of a stream, not state: forward never reassigns them once set)."""
        device = self.t.device
        self.history = torch.zeros(0, 0, self.bins, 2, device=device)
        self.previous = torch.zeros(0, self.partition, device=device)
        if self.streaming:
            with torch.no_grad():
                self.ir_spectra = self._ir_spectra()
        else:
            self.ir_spectra = torch.zeros(0, self.bins, 2, device=device)

    def _ir_spectra(self) -> torch.Tensor:
        p, n_parts = self.partition, self.n_parts
        ir = nn.functional.pad(self.impulse_response().detach(), (0, n_parts * p - self.length))
        # partition k of the IR zero-padded to 2p (overlap-save), oldest partition first
        spec = torch.fft.rfft(ir.reshape(n_parts, p), 2 * p).flip(0)  # (n_parts, bins)
        return torch.view_as_real(spec).contiguous()

    @torch.jit.unused
    def _conv_weight(self, spectra: torch.Tensor) -> torch.Tensor:
        """(2 * bins, 2, n_parts) grouped-conv1d weight from :meth:`_ir_spectra`: per bin, the complex
        product with each partition's spectrum as a 2 × 2 real matrix (conv1d correlates: oldest first)."""
        re, im = spectra[..., 0].t(), spectra[..., 1].t()  # (bins, n_parts)
        w = torch.stack([torch.stack([re, -im], dim=1), torch.stack([im, re], dim=1)], dim=1)
        return w.reshape(2 * self.bins, 2, self.n_parts)

    def impulse_response(self) -> torch.Tensor:
        """(length,) the wet impulse response (first sample 0)."""
        env = torch.exp(-self.rate_scale * nn.functional.softplus(self.decay) * self.t)
        return self.noise * env * torch.sigmoid(self.wet) * self.not_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, T), T a multiple of the partition when streaming. Returns: (B, T) dry + wet."""
        b = x.shape[0]
        if self.streaming:
            if self.ir_spectra.shape[0] == 0:  # streaming switched on without reset()
                self.ir_spectra = self._ir_spectra()
            if self.previous.shape[0] != b:
                self.previous = x.new_zeros(b, self.partition)
                self.history = x.new_zeros(b, self.n_parts - 1, self.bins, 2)
            state = (self.previous, self.history, self.ir_spectra)
            if graph_mode():
                wet, previous, history = self._partitioned_graph(x, state[0], state[1], state[2])
            else:
                wet, previous, history = self._partitioned(x, state[0], state[1], state[2])
            self.previous, self.history = previous, history
            return x + wet
        if graph_mode():  # no long FFT in an exported graph: the partitioned form from silence
            wet = self._partitioned_graph(
                x,
                x.new_zeros(b, self.partition),
                x.new_zeros(b, self.n_parts - 1, self.bins, 2),
                self._ir_spectra(),
            )[0]
            return x + wet
        return x + fft_convolve(x, self.impulse_response())[:, : x.shape[-1]]

    def _windows(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """(B, S, 2p) overlap-save windows of x's S partitions (each with the partition before it)."""
        b, length = x.shape
        p = self.partition
        if length % p:
            raise ValueError(f"streaming reverb needs blocks that are multiples of {p} samples, got {length}")
        segments = x.reshape(b, length // p, p)
        before = torch.cat([previous.unsqueeze(1), segments[:, :-1]], dim=1)
        return torch.cat([before, segments], dim=-1)

    def _partitioned(
        self, x: torch.Tensor, previous: torch.Tensor, history: torch.Tensor, ir_spectra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Overlap-save partitioned convolution of a block (eager and TorchScript: complex FFTs).

        Args:
            x: (B, T) new input, T a multiple of the partition p.
            previous: (B, p) the input partition before x.
            history: (B, n_parts - 1, bins, 2) (re, im) spectra of the previous windows, oldest first.
            ir_spectra: (n_parts, bins, 2) :meth:`_ir_spectra`.

        Returns:
            (wet (B, T), new previous, new history).
        """
        b, length = x.shape
        p, n_parts = self.partition, self.n_parts
        windows = self._windows(x, previous)
        spectra = torch.fft.rfft(windows)  # (B, S, bins)
        past = torch.view_as_complex(history)  # (B, n_parts - 1, bins)
        ir = torch.view_as_complex(ir_spectra)  # (n_parts, bins)
        n_new = spectra.shape[1]
        # output partition s: sum over j of every[s + j] * ir[j], every = past ++ spectra, taken from the two
        # parts in place (no copy of the whole history) on contiguous (partitions, bins) slices (an unfold
        # over the partition axis reads with a stride of `bins` and is slower once out of cache)
        accs: list[torch.Tensor] = []
        for s in range(n_new):
            old = max(0, n_parts - 1 - s)  # IR partitions that meet the history
            first = max(0, s - (n_parts - 1))  # the oldest new spectrum in this output's window
            acc_s = (spectra[:, first : s + 1] * ir[old:]).sum(1)
            if old > 0:
                acc_s = acc_s + (past[:, s:] * ir[:old]).sum(1)
            accs.append(acc_s)
        acc = torch.stack(accs, dim=1) if n_new > 1 else accs[0].unsqueeze(1)  # (B, S, bins)
        wet = torch.fft.irfft(acc, 2 * p)[..., p:]  # overlap-save: keep the last p samples
        # the newest n_parts - 1 spectra, as the next call's history (one copy)
        if n_new >= n_parts - 1:
            new_history = torch.view_as_real(spectra[:, n_new - (n_parts - 1) :]).contiguous()
        else:
            new_history = torch.cat([history[:, n_new:], torch.view_as_real(spectra)], dim=1)
        return wet.reshape(b, length), x[:, length - p :], new_history

    @torch.jit.unused
    def _partitioned_graph(
        self, x: torch.Tensor, previous: torch.Tensor, history: torch.Tensor, ir_spectra: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_partitioned` for traced/exported graphs: DFTs as constant matmuls, the multiply-add over
        partitions as one grouped conv1d on (re, im) channel pairs (no unfold, no loop: any length)."""
        b, length = x.shape
        p, bins, n_parts = self.partition, self.bins, self.n_parts
        windows = self._windows(x, previous)
        spectra = torch.matmul(windows, torch.from_numpy(rdft_basis(2 * p)))  # (B, S, 2 bins) interleaved
        past = history.reshape(b, n_parts - 1, 2 * bins)
        every = torch.cat([past, spectra], dim=1).transpose(1, 2)  # (B, 2 bins, n_parts - 1 + S)
        acc = nn.functional.conv1d(every, self._conv_weight(ir_spectra), groups=bins).transpose(1, 2)
        wet = torch.matmul(acc, torch.from_numpy(irdft_tail_basis(2 * p, p)))  # (B, S, p)
        keep = every.shape[2] - (n_parts - 1)
        new_history = every[:, :, keep:].transpose(1, 2).reshape(b, n_parts - 1, bins, 2)
        return wet.reshape(b, length), x[:, length - p :], new_history
