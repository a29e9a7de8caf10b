"""Unit tests of the DSP blocks and synthesizers against independent references."""

import numpy as np
import pytest
import torch
from scipy.signal.windows import blackmanharris

from acids_ddsp.dsp import (
    NOISE_PERIODS,
    accumulate_phase,
    causal_ramp,
    frame_convolve,
    frame_convolve_direct,
    irdft_tail_basis,
    magnitudes_to_ir,
    overlap_add,
    position_noise,
    rdft_basis,
)
from acids_ddsp.synths import FilteredNoise, HarmonicSynth, Reverb

SR = 16000


def harmonic_tone(f0: float, n_harmonics: int, seconds: float = 1.0, hop: int = 64) -> np.ndarray:
    synth = HarmonicSynth(SR, hop, n_harmonics)
    frames = int(seconds * SR) // hop
    with torch.no_grad():
        out = synth(
            torch.full((1, frames), f0), torch.full((1, frames), 0.5), torch.ones(1, frames, n_harmonics)
        )
    return out[0].numpy()


def test_harmonic_synth_makes_f0_and_its_harmonics_only_below_nyquist():
    f0, hop = 440.0, 64
    x = harmonic_tone(f0, 50, seconds=1.0, hop=hop)[hop:]  # skip the fade-in frame
    window = blackmanharris(len(x))  # sidelobes < -92 dB, so leakage does not hide aliases
    spec = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    near = np.zeros_like(spec, dtype=bool)
    kept = [k for k in range(1, 51) if k * f0 < SR / 2]
    assert kept == list(range(1, 19))  # 18 * 440 = 7920 Hz < 8 kHz <= 19 * 440
    for k in kept:
        line = np.abs(freqs - k * f0) <= 6.0
        near |= line
        # every kept harmonic is there with its share of the (renormalised) amplitude: 0.5 / 18
        amp = 2 * np.sqrt(spec[line].sum() / np.sum(window**2) / len(x))
        assert amp == pytest.approx(0.5 / len(kept), rel=0.02)
    assert spec[~near].sum() < 1e-9 * spec.sum()  # nothing else (-90 dB): no aliases above Nyquist


def test_a_harmonic_is_muted_from_the_frame_its_ramp_would_cross_nyquist():
    hop, k = 64, 10
    frames = 100
    f0 = torch.linspace(600.0, 1000.0, frames)[None]  # harmonic 10 crosses 8 kHz at f0 = 800 Hz
    dist = torch.zeros(1, frames, k)
    dist[..., k - 1] = 1.0
    with torch.no_grad():
        out = HarmonicSynth(SR, hop, k)(f0, torch.ones(1, frames), dist)[0]
    crossing = int(torch.nonzero(f0[0] * k >= SR / 2)[0])  # first frame whose ramp ends above Nyquist
    assert out[crossing * hop :].abs().max() == 0.0
    assert out[(crossing - 1) * hop : crossing * hop].abs().max() > 0.1


def test_phase_stays_exact_over_five_minutes_at_48k_streaming():
    """5 min of a 440 Hz sine at 48 kHz, streamed in 4 s blocks, against exact integer phase arithmetic."""
    sr, hop, f0 = 48000, 512, 440.0
    synth = HarmonicSynth(sr, hop, 1)
    synth.streaming = True
    frames = 375  # 4 s per call
    worst = 0.0
    with torch.no_grad():
        for block in range(75):
            out = synth(torch.full((1, frames), f0), torch.ones(1, frames), torch.ones(1, frames, 1))[0]
            n = torch.arange(block * frames * hop, (block + 1) * frames * hop, dtype=torch.int64)
            exact = torch.sin(2 * torch.pi * ((n * 440) % sr).to(torch.float64) / sr)
            err = (out.double() - exact)[hop if block == 0 else 0 :].abs().max().item()
            worst = max(worst, err)
    assert worst < 2e-5  # float32 sine resolution; a float32 running phase would be off by ~0.1 rad here


def test_offline_phase_is_float64_precise():
    sr = 48000
    n = 3 * 60 * sr  # three minutes in one call
    zero = torch.zeros(1, 1, dtype=torch.float64)
    phase, last = accumulate_phase(torch.full((1, n), 440.0), sr, zero, 512)
    exact = (torch.arange(n - 1000, n, dtype=torch.int64) * 440 % sr).double() / sr
    err = (phase[0, -1000:].double() - exact + 0.5) % 1.0 - 0.5  # circular distance in cycles
    assert err.abs().max().item() < 1e-7  # float32 output resolution
    assert abs((last.item() - (n * 440 % sr) / sr + 0.5) % 1.0 - 0.5) < 1e-8


def test_causal_ramp_reaches_each_frame_value_at_its_end():
    x = torch.tensor([[1.0, 3.0, -1.0]])
    out = causal_ramp(x, torch.tensor([[0.0]]), 4)
    assert out[0, 3::4].tolist() == [1.0, 3.0, -1.0]
    assert out[0, :4].tolist() == [0.25, 0.5, 0.75, 1.0]


def test_overlap_add_matches_loop():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 7, 23, generator=g)
    hop = 5
    ref = torch.zeros(2, 6 * hop + 23)
    for i in range(7):
        ref[:, i * hop : i * hop + 23] += frames[:, i]
    out = overlap_add(frames, hop)
    torch.testing.assert_close(out[:, : ref.shape[1]], ref)
    assert out[:, ref.shape[1] :].abs().max() == 0


@pytest.mark.parametrize("n_bands", [9, 65])  # 16 taps (< hop) and 128 taps (tails over two frames)
def test_filtered_noise_equals_reference_long_convolution(n_bands):
    hop, frames = 64, 40
    g = torch.Generator().manual_seed(3)
    mags = torch.rand(1, frames, n_bands, generator=g) ** 2
    fn = FilteredNoise(hop, n_bands, seed=7).eval()
    with torch.no_grad():
        out = fn(mags)[0].double().numpy()
    noise = position_noise(torch.tensor(0), frames * hop, 7).double().numpy()
    irs = magnitudes_to_ir(mags.double())[0].numpy()
    # reference: the signal is the sum over frames of (noise masked to the frame) * (that frame's filter),
    # each a full-length linear convolution, truncated to the signal
    ref = np.zeros(frames * hop + irs.shape[1] - 1)
    for i in range(frames):
        masked = np.zeros(frames * hop)
        masked[i * hop : (i + 1) * hop] = noise[i * hop : (i + 1) * hop]
        ref += np.convolve(masked, irs[i])
    ref = ref[: frames * hop]
    err = np.abs(out - ref).max()
    assert err < 1e-5 * np.abs(ref).max()
    # one fixed filter: the same as convolving the whole noise at once
    fixed = mags[:, :1].expand(1, frames, n_bands)
    with torch.no_grad():
        out_fixed = fn(fixed)[0].double().numpy()
    ref_fixed = np.convolve(noise, irs[0])[: frames * hop]
    assert np.abs(out_fixed - ref_fixed).max() < 1e-5 * np.abs(ref_fixed).max()


def test_noise_filter_is_linear_phase_with_the_requested_response():
    mags = torch.zeros(1, 65)
    mags[0, :20] = 1.0  # a low-pass
    ir = magnitudes_to_ir(mags)[0]
    torch.testing.assert_close(ir[1:], ir[1:].flip(0))  # symmetric around sample 64: linear phase
    resp = torch.fft.rfft(ir, 1024).abs()
    assert resp[:100].min() > 0.5  # pass band (bins < 0.2 * Nyquist at this size)
    assert resp[250:].max() < 0.02  # stop band


def test_position_noise_is_white_uniform_and_block_independent():
    x = position_noise(torch.tensor(12345), 1 << 18, 0).double()
    assert abs(x.mean().item()) < 0.01
    assert x.var().item() == pytest.approx(1 / 3, rel=0.02)
    assert x.min() >= -1 and x.max() < 1
    assert abs(torch.corrcoef(torch.stack([x[:-1], x[1:]]))[0, 1].item()) < 0.01
    spec = torch.fft.rfft(x.reshape(64, -1), dim=-1).abs().pow(2).mean(0)[1:]
    bands = spec.reshape(16, -1).mean(-1)
    assert (bands.max() / bands.min()).item() < 1.2  # flat
    parts = torch.cat([position_noise(torch.tensor(12345 + s), n, 0) for s, n in ((0, 100), (100, 1000))])
    torch.testing.assert_close(parts, x[:1100].float(), atol=0, rtol=0)
    assert not torch.equal(position_noise(torch.tensor(0), 64, 1), position_noise(torch.tensor(0), 64, 2))


def test_position_noise_is_exact_far_away_and_repeats_after_its_period():
    period = NOISE_PERIODS[0] * NOISE_PERIODS[1] * NOISE_PERIODS[2]
    far = 10**9 + 12345  # 5.8 h at 48 kHz
    again = position_noise(far - period, 300, 0)
    torch.testing.assert_close(again, position_noise(far, 300, 0), atol=0, rtol=0)
    x = position_noise(far, 1 << 16, 0).double()
    assert abs(x.mean().item()) < 0.02 and x.var().item() == pytest.approx(1 / 3, rel=0.03)
    # values are multiples of 2**-22: exact in float32, so every runtime computes the same samples
    assert torch.equal(x * 2**22, torch.round(x * 2**22))


def test_exportable_forms_equal_the_fft_forms():
    g = torch.Generator().manual_seed(0)
    frames, irs = torch.randn(2, 5, 64, generator=g), torch.randn(2, 5, 16, generator=g)
    torch.testing.assert_close(frame_convolve_direct(frames, irs), frame_convolve(frames, irs, 128))
    x = torch.randn(3, 128, generator=g)
    spec = x @ torch.from_numpy(rdft_basis(128))
    ref = torch.view_as_real(torch.fft.rfft(x)).reshape(3, -1)
    torch.testing.assert_close(spec, ref, atol=2e-5, rtol=1e-5)
    tail = spec @ torch.from_numpy(irdft_tail_basis(128, 64))
    torch.testing.assert_close(tail, x[:, 64:], atol=1e-5, rtol=1e-5)


def test_reverb_tail_continues_across_blocks():
    reverb = Reverb(SR, 2000, 64)
    with torch.no_grad():
        reverb.wet.fill_(3.0)
        ir = reverb.impulse_response()
        x = torch.zeros(1, 6400)
        x[0, 10] = 1.0
        offline = reverb(x)
        reverb.streaming = True
        reverb.reset()
        sizes = [128, 64, 1024, 64 * 40, 64 * 3] + [64] * 38  # one block over 16 partitions
        streamed = torch.cat([reverb(c) for c in x.split(sizes, dim=-1)], dim=-1)
    expected = x.clone()
    expected[0, 10:2010] += ir
    torch.testing.assert_close(offline, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(streamed, expected, atol=1e-6, rtol=0)
    assert streamed[0, 1000:2000].abs().max() > 1e-3  # the tail really rings into later blocks
