"""Differentiable DSP building blocks (pure functions, TorchScript- and torch.export-friendly).

Conventions: time on the last axis; a "frame" is one hop of samples; frame i covers samples
[i*hop, (i+1)*hop) (the acids-data alignment), so a block of F frames synthesises exactly F*hop samples.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

TWO_PI = 2.0 * math.pi


def exp_sigmoid(
    x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7
) -> torch.Tensor:
    """The magenta/DDSP positive nonlinearity: ``max_value * sigmoid(x) ** ln(exponent) + threshold``."""
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def hz_to_midi(f0: torch.Tensor) -> torch.Tensor:
    """MIDI note number of a frequency, clamped to [0, 127] (0 Hz → 0)."""
    midi = 12.0 * torch.log2(f0.clamp(min=1e-3) / 440.0) + 69.0
    return midi.clamp(0.0, 127.0)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (>= 1)."""
    size = 1
    while size < n:
        size *= 2
    return size


def causal_ramp(x: torch.Tensor, prev: torch.Tensor, hop: int) -> torch.Tensor:
    """Upsample frame controls with a causal linear ramp.

    Sample k of frame i is ``x[i-1] + (x[i] - x[i-1]) * (k + 1) / hop``: it reaches frame i's value at
    the end of the frame and never looks at frame i + 1 (no look-ahead, so blocks stream exactly).

    Args:
        x: (B, F) frame values.
        prev: (B, 1) the value before frame 0.
        hop: samples per frame.

    Returns:
        (B, F * hop).
    """
    before = torch.cat([prev, x[:, :-1]], dim=1)
    ramp = torch.arange(1, hop + 1, dtype=x.dtype, device=x.device) / hop
    out = before.unsqueeze(-1) + (x - before).unsqueeze(-1) * ramp
    return out.reshape(x.shape[0], -1)


def accumulate_phase(
    freq: torch.Tensor, sample_rate: int, phase0: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Oscillator phase in cycles, wrapped to [0, 1), precise at any signal length.

    Sample n has phase ``phase0 + sum_{m<n} freq[m] / sample_rate`` (the first sample starts at ``phase0``).
    An unwrapped float32 phase loses the fraction of a cycle on long signals (10 min of 440 Hz is 264,000
    cycles, where float32 resolves 1/64 cycle; magenta's ``use_angular_cumsum`` problem at 48 kHz), and even a
    float64 ``cumsum`` of 28.8 M equal increments drifts by 1.4e-4 cycles because its rounding errors share
    one sign. Here the sum is taken in two float64 levels: within chunks of ``chunk`` samples, then over the
    chunk totals wrapped to [0, 1); the running sums stay small, and the error after 10 minutes at 48 kHz is
    6e-9 cycles (measured; tests/test_synths.py checks < 1e-8 after 3 minutes).

    Args:
        freq: (B, T) instantaneous frequency in Hz, T a multiple of ``chunk``.
        sample_rate: in Hz.
        phase0: (B, 1) float64 phase in cycles of the first sample.
        chunk: inner summation length (the hop).

    Returns:
        ((B, T) phase in cycles, in freq's dtype; (B, 1) float64 wrapped phase of the sample after the last).
    """
    b, t = freq.shape
    inc = (freq.to(torch.float64) / sample_rate).reshape(b, t // chunk, chunk)
    within = torch.cumsum(inc, dim=-1)  # (B, C, chunk) inclusive sums inside each chunk
    totals = within[..., -1]
    ends = torch.cumsum(totals - torch.floor(totals), dim=-1) + phase0  # (B, C) at each chunk's end
    starts = torch.cat([phase0, ends[:, :-1]], dim=1)
    cycles = starts.unsqueeze(-1) + (within - inc)  # exclusive sums: sample n excludes its own increment
    cycles = (cycles - torch.floor(cycles)).reshape(b, t)
    last = ends[:, -1:]
    return cycles.to(freq.dtype), last - torch.floor(last)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Overlap-add frames of M samples placed every ``hop`` samples.

    Args:
        frames: (B, F, M).
        hop: frame step.

    Returns:
        (B, F * hop + K * hop - hop) with K = ceil(M / hop): every sample of every frame, summed.
    """
    b, n, m = frames.shape
    k = (m + hop - 1) // hop
    frames = F.pad(frames, (0, k * hop - m)).reshape(b, n, k, hop)
    out = frames.new_zeros(b, n + k - 1, hop)
    for j in range(k):
        # piece j of frame i lands on output frame i + j
        out = out + F.pad(frames[:, :, j, :], (0, 0, j, k - 1 - j))
    return out.reshape(b, -1)


def fft_convolve(signal: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Full linear convolution along the last axis via the FFT (broadcast over leading axes).

    Returns:
        (..., N + K - 1).
    """
    n = signal.shape[-1] + kernel.shape[-1] - 1
    size = next_pow2(n)
    spec = torch.fft.rfft(signal, size) * torch.fft.rfft(kernel, size)
    return torch.fft.irfft(spec, size)[..., :n]


def ir_basis(n_bands: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The linear map from ``n_bands`` magnitudes to the linear-phase FIR of :func:`magnitudes_to_ir`.

    ``irfft`` of real (zero-phase) magnitudes is a cosine sum; rolled by half its length and Hann-windowed it
    stays linear in the magnitudes, so the whole design is one (n_bands, taps) matrix: a matmul that
    exports to any ONNX runtime (no DFT operator), computed once in float64.
    """
    size = 2 * (n_bands - 1)
    k = torch.arange(n_bands, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(size, dtype=torch.float64) - size // 2  # the roll: output n is zero-phase sample n - N/2
    weight = torch.full((n_bands, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    weight[-1] = 1.0  # DC and Nyquist appear once in a real spectrum
    window = torch.hann_window(size, periodic=True, dtype=torch.float64)
    basis = weight * torch.cos(2.0 * math.pi * k * n / size) / size * window
    return basis.to(dtype)


def magnitudes_to_ir(magnitudes: torch.Tensor, basis: torch.Tensor | None = None) -> torch.Tensor:
    """Linear-phase FIR filters from frequency-response magnitudes (one filter per frame).

    The zero-phase response of ``n_bands`` magnitudes (DC to Nyquist) is made causal by a shift of half its
    length and Hann-windowed, so its delay is exactly ``n_bands - 1`` samples at every frequency.

    Args:
        magnitudes: (..., n_bands), non-negative.
        basis: :func:`ir_basis` of this size and dtype (built here when None).

    Returns:
        (..., 2 * (n_bands - 1)) impulse responses.
    """
    if basis is None:
        basis = ir_basis(magnitudes.shape[-1], magnitudes.dtype).to(magnitudes.device)
    return torch.matmul(magnitudes, basis)


def graph_mode() -> bool:
    """True while tracing (ONNX export) or torch.export-ing: use the FFT-free forms of the DSP.

    Eager and TorchScript (nn~) keep torch.fft; the traced forms compute the same convolutions with
    gathers, matmuls and convolutions only, which every ONNX runtime (TensorRT included) imports.
    """
    if torch.jit.is_scripting():
        return False
    else:
        return torch.jit.is_tracing() or torch.compiler.is_exporting()


@functools.lru_cache(maxsize=16)
def conv_index(length: int, taps: int) -> np.ndarray:
    """(length + taps - 1, taps) gather index of a full convolution: row m, column t reads sample m - t of a
    signal padded by taps - 1 on the left (index m - t + taps - 1)."""
    m = np.arange(length + taps - 1)[:, None]
    return m - np.arange(taps)[None, :] + taps - 1


def frame_convolve(frames: torch.Tensor, irs: torch.Tensor, fft_size: int) -> torch.Tensor:
    """Full linear convolution of each frame with its own filter, by FFT.

    Args:
        frames: (B, F, L) signal frames.
        irs: (B, F, taps) one filter per frame.
        fft_size: >= L + taps - 1.

    Returns:
        (B, F, L + taps - 1).
    """
    spec = torch.fft.rfft(frames, fft_size) * torch.fft.rfft(irs, fft_size)
    return torch.fft.irfft(spec, fft_size)[..., : frames.shape[-1] + irs.shape[-1] - 1]


def frame_convolve_direct(frames: torch.Tensor, irs: torch.Tensor) -> torch.Tensor:
    """:func:`frame_convolve` without an FFT (a constant gather and a matmul): the exportable form."""
    taps = irs.shape[-1]
    index = torch.from_numpy(conv_index(int(frames.shape[-1]), int(taps)))  # a constant when traced
    padded = F.pad(frames, (taps - 1, taps - 1))
    windows = padded[..., index]  # (B, F, L + taps - 1, taps)
    return torch.matmul(windows, irs.unsqueeze(-1)).squeeze(-1)


@functools.lru_cache(maxsize=16)
def rdft_basis(size: int) -> np.ndarray:
    """(size, 2 * bins) float32 matrix of the real DFT, bins = size // 2 + 1, columns interleaved
    (re_0, im_0, re_1, im_1, ...): ``x @ basis`` is ``torch.view_as_real(torch.fft.rfft(x))`` flattened."""
    bins = size // 2 + 1
    nk = (np.arange(size)[:, None] * np.arange(bins)[None, :]) % size  # exact angles, reduced first
    arg = 2.0 * np.pi * nk / size
    return np.stack([np.cos(arg), -np.sin(arg)], axis=-1).reshape(size, 2 * bins).astype(np.float32)


@functools.lru_cache(maxsize=16)
def irdft_tail_basis(size: int, keep: int) -> np.ndarray:
    """(2 * bins, keep) float32 matrix giving the last ``keep`` samples of ``torch.fft.irfft(spectrum, size)``
    from an interleaved (re, im) spectrum (the imaginary parts of DC and Nyquist ignored, as irfft does)."""
    bins = size // 2 + 1
    kn = (np.arange(bins)[:, None] * np.arange(size - keep, size)[None, :]) % size
    arg = 2.0 * np.pi * kn / size
    weight = np.full((bins, 1), 2.0)
    weight[0] = 1.0
    if size % 2 == 0:
        weight[-1] = 1.0
    re = weight * np.cos(arg) / size
    im = -weight * np.sin(arg) / size
    im[0] = 0.0
    if size % 2 == 0:
        im[-1] = 0.0
    return np.stack([re, im], axis=1).reshape(2 * bins, keep).astype(np.float32)


#: lengths of the three noise tables (primes): the noise repeats after their product, 1.087e9 samples
#: (6.3 hours at 48 kHz)
NOISE_PERIODS = (1021, 1031, 1033)


def noise_table(seed: int) -> torch.Tensor:
    """The concatenated noise tables of a seed: (sum(NOISE_PERIODS),) float32 values k / 2**23, k uniform in
    [0, 2**23), drawn with Python's ``random.Random(seed).random()`` (a sequence Python guarantees stable)."""
    import random

    rng = random.Random(seed)
    values = [math.floor(rng.random() * 8388608.0) for _ in range(sum(NOISE_PERIODS))]
    return torch.tensor(values, dtype=torch.float64).div(8388608.0).float()


def table_noise(
    table: torch.Tensor, periods: torch.Tensor, offsets: torch.Tensor, counters: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise in [-1, 1) that is a pure function of the absolute sample position n.

    ``u(n) = frac(T1[n mod 1021] + T2[n mod 1031] + T3[n mod 1033])``, the tables holding multiples of
    2**-23, so every sum and wrap is exact in float32 and the same in eager, TorchScript and any ONNX
    runtime. The position is carried as its three residues (``counters``, small integers stored in
    float32: the state needs no int64 and never grows), and the index arithmetic uses integer Div only
    (no Mod, no bit operations: TensorRT 8.2 imports it). The sum of independent uniforms modulo 1 is
    uniform; consecutive samples read three unrelated table entries.

    Args:
        table: :func:`noise_table` (3085,).
        periods: (3, 1) int64 NOISE_PERIODS.
        offsets: (3, 1) int64 start of each table in ``table``.
        counters: (3,) float32 residues n mod period of the first sample.
        length: samples.

    Returns:
        ((length,) float32 noise, (3,) float32 residues of the sample after the last).
    """
    start = counters.to(torch.int64).unsqueeze(1)  # (3, 1)
    pos = start + torch.arange(length, dtype=torch.int64, device=table.device)  # (3, L)
    residue = pos - torch.div(pos, periods, rounding_mode="trunc") * periods
    values = table[residue + offsets]  # (3, L)
    total = values[0] + values[1]
    total = total - (total >= 1.0).to(total.dtype)
    total = total + values[2]
    total = total - (total >= 1.0).to(total.dtype)
    end = start + length
    end = end - torch.div(end, periods, rounding_mode="trunc") * periods
    return total * 2.0 - 1.0, end.squeeze(1).to(torch.float32)


def noise_counters(position: int) -> torch.Tensor:
    """(3,) float32 residues of an absolute sample position (a stream starting there)."""
    return torch.tensor([position % p for p in NOISE_PERIODS], dtype=torch.float32)


def position_noise(start: int | torch.Tensor, length: int, seed: int) -> torch.Tensor:
    """The noise of ``length`` samples from absolute position ``start`` (a convenience over
    :func:`table_noise`: builds the table of ``seed``). Returns (length,) float32."""
    periods = torch.tensor(NOISE_PERIODS, dtype=torch.int64).unsqueeze(1)
    offsets = torch.tensor([0, NOISE_PERIODS[0], NOISE_PERIODS[0] + NOISE_PERIODS[1]]).unsqueeze(1)
    counters = noise_counters(int(start))
    return table_noise(noise_table(seed), periods, offsets, counters, length)[0]
