"""``acids-sub``: a batched, deterministic, differentiable subtractive synthesizer in plain PyTorch.

Signal path (one voice per batch item)::

    osc1 (sine→tri→saw→pulse morph, tune) ─┐
                                            ├─ mix / ring mod ─┐
    osc2 (morph, tune, fine)  ──────────────┘                  ├─ resonant LPF (env2, LFO, key) → HPF
    noise (fixed table, spectral tilt) ────────────────────────┘        → drive (tanh) → VCA (env1, LFO) → out

* Oscillators run at audio rate from a float64 phase accumulator; saw and pulse edges are PolyBLEP
  corrected (little aliasing at C4). The LFO (sine→triangle→square, delay fade-in) modulates pitch
  (vibrato), pulse width, cutoff and amplitude.
* Envelopes are closed-form ADSRs (linear attack, exponential decay and release reaching ~1 % of their
  step at the stated time), evaluated at a control rate (every 64 samples) and interpolated linearly.
* The filters act frame by frame in the frequency domain (frames of ``n_fft`` samples, 50 % overlap,
  square-root Hann analysis and synthesis windows, which overlap-add to exactly 1): the oscillator mix's
  spectrum (plus the noise table's, precomputed once) is multiplied by the zero-phase magnitude response
  of a 2-pole (12 dB/oct) or 4-pole (24 dB/oct) resonant low-pass at the frame's cutoff and a 2-pole
  Butterworth high-pass. This is an approximation of a time-varying analog filter: the cutoff is
  constant within a frame (11.6 ms at 22.05/44.1 kHz) and a resonance does not ring past a frame. It is
  what makes the synth fast (no sample loop) and differentiable.
* Noise is one fixed table (seeded), the same for every item: renders are bit-for-bit repeatable and an
  item renders the same alone or in any batch (up to float rounding of batched FFTs).

Every operation is a torch op on (B, ...) tensors, so gradients flow to every continuous parameter
(through the phase, the envelopes and the filter response). The discrete ``filter_slope`` is rendered as
a blend when given a fractional value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from acids_flowsynth.synth import Param

CONTROL_BLOCK = 64  # samples per control-rate point (envelopes, LFO)
_DECAY = 4.6  # exp(-4.6) ~ 1 %: the decay/release "time" is when 99 % of the step is done
NOISE_SEED = 20190708

PARAMS: tuple[Param, ...] = (
    Param("osc1_shape", 0.0, 1.0, 0.67),  # 0 sine, 1/3 triangle, 2/3 saw, 1 pulse
    Param("osc1_tune", -12.0, 12.0, 0.0, unit="st"),
    Param("osc2_shape", 0.0, 1.0, 0.67),
    Param("osc2_tune", -24.0, 24.0, 0.0, unit="st"),
    Param("osc2_fine", -50.0, 50.0, 7.0, unit="cent"),
    Param("osc_mix", 0.0, 1.0, 0.5),  # 0: osc1 only, 1: osc2 only
    Param("pulse_width", 0.05, 0.95, 0.5),
    Param("ring_mod", 0.0, 1.0, 0.0),  # crossfade from the mix to osc1 * osc2
    Param("noise_level", 0.0, 1.0, 0.0),
    Param("noise_color", -1.0, 1.0, 0.0),  # spectral tilt, +-6 dB/octave around 1 kHz
    Param("filter_cutoff", 30.0, 16000.0, 3000.0, curve="exp", unit="Hz"),
    Param("filter_resonance", 0.0, 1.0, 0.2),  # Q from 0.707 to 20 (exponentially)
    Param("filter_env_amount", -1.0, 1.0, 0.25),  # x 5 octaves
    Param("filter_keytrack", 0.0, 1.0, 0.5),  # 1: the cutoff follows the note
    Param("filter_lfo_depth", 0.0, 1.0, 0.0),  # x 3 octaves
    Param("hpf_cutoff", 20.0, 2000.0, 20.0, curve="exp", unit="Hz"),
    Param("env1_attack", 0.001, 4.0, 0.005, curve="exp", unit="s"),
    Param("env1_decay", 0.005, 4.0, 0.5, curve="exp", unit="s"),
    Param("env1_sustain", 0.0, 1.0, 0.8),
    Param("env1_release", 0.005, 4.0, 0.3, curve="exp", unit="s"),
    Param("env2_attack", 0.001, 4.0, 0.005, curve="exp", unit="s"),
    Param("env2_decay", 0.005, 4.0, 0.6, curve="exp", unit="s"),
    Param("env2_sustain", 0.0, 1.0, 0.3),
    Param("env2_release", 0.005, 4.0, 0.5, curve="exp", unit="s"),
    Param("lfo_rate", 0.1, 20.0, 5.0, curve="exp", unit="Hz"),
    Param("lfo_shape", 0.0, 1.0, 0.0),  # 0 sine, 0.5 triangle, 1 square
    Param("lfo_delay", 0.0, 2.0, 0.0, unit="s"),  # linear fade-in time
    Param("lfo_pitch_depth", 0.0, 1.0, 0.0),  # vibrato, x 2 semitones
    Param("lfo_pw_depth", 0.0, 1.0, 0.0),  # x 0.45 of pulse width
    Param("lfo_amp_depth", 0.0, 1.0, 0.0),  # tremolo
    Param("drive", 0.0, 1.0, 0.0),  # tanh gain 1 .. 10
    Param("volume", 0.0, 1.0, 0.8),
    Param("filter_slope", 0.0, 1.0, 1.0, continuous=False, steps=2),  # 0: 12 dB/oct, 1: 24 dB/oct
)

# Subsets in the spirit of the paper's Diva subsets: 16 = amp envelope, filter, oscillators, vibrato;
# 32 = every continuous parameter; all = with the discrete ones. Datasets render C4 and key tracking is
# relative to C4, so ``filter_keytrack`` has no effect on them: it is not in 16 (every parameter of 16
# audibly changes a C4 render: tests/test_synth.py), and in 32 / all it is a parameter no model can infer
# from a C4 note (as Diva's KeyFollow in the paper's 32).
SUBSET_16 = (
    "env1_attack",
    "env1_decay",
    "env1_sustain",
    "filter_cutoff",
    "filter_resonance",
    "filter_env_amount",
    "env1_release",
    "osc_mix",
    "lfo_pitch_depth",
    "osc2_tune",
    "osc2_fine",
    "osc1_shape",
    "osc2_shape",
    "noise_level",
    "ring_mod",
    "drive",
)
SUBSETS = {
    "16": SUBSET_16,
    "32": tuple(p.name for p in PARAMS if p.continuous),
    "all": tuple(p.name for p in PARAMS),
}
INDEX = {p.name: i for i, p in enumerate(PARAMS)}


def _blep(t: torch.Tensor, inv_dt: torch.Tensor) -> torch.Tensor:
    """PolyBLEP residual of an upward unit-step discontinuity at phase 0 (t in [0, 1), dt < 0.5).

    Equals ``-(1 - t/dt)^2`` just after the edge and ``(1 + (t - 1)/dt)^2`` just before it, 0 elsewhere.
    ``inv_dt`` is 1 / dt.
    """
    td = t * inv_dt
    after = (1.0 - td).clamp(min=0.0)
    before = (td + (1.0 - inv_dt)).clamp(min=0.0)
    return before * before - after * after


def _oscillator(phase: torch.Tensor, dt: torch.Tensor, shape: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """Morphing oscillator: shape 0 sine, 1/3 triangle, 2/3 saw, 1 pulse (width ``pw``).

    Args:
        phase: (B, T) in [0, 1). dt: (B, T) phase increment per sample. shape: (B, 1). pw: (B, T) or (B, 1).
    """
    s3 = 3.0 * shape
    w = [(1.0 - (s3 - k).abs()).clamp(min=0.0) for k in range(4)]  # hat weights, (B, 1) each
    inv_dt = 1.0 / dt
    rise = _blep(phase, inv_dt)  # the saw's falling edge and the pulse's rising edge, both at phase 0
    out = w[0] * torch.sin(2.0 * math.pi * phase)
    out = out + w[1] * (1.0 - 4.0 * (phase - 0.5).abs())
    out = out + w[2] * (2.0 * phase - 1.0 - rise)
    falling = torch.frac(phase - pw + 1.0)
    pulse = torch.where(phase < pw, 1.0, -1.0) + rise - _blep(falling, inv_dt)
    return out + w[3] * pulse


def _adsr(t: torch.Tensor, a: torch.Tensor, d: torch.Tensor, s: torch.Tensor, r: torch.Tensor, hold: float):
    """Closed-form ADSR at times ``t`` (1, N) for parameters (B, 1) each; the note is released at ``hold``."""

    def on(time: torch.Tensor) -> torch.Tensor:
        attack = time / a
        decay = s + (1.0 - s) * torch.exp(-_DECAY * (time - a).clamp(min=0.0) / d)
        return torch.where(time < a, attack, decay)

    level = on(torch.full_like(a, hold))  # where the release starts, (B, 1)
    off = level * torch.exp(-_DECAY * (t - hold).clamp(min=0.0) / r)
    return torch.where(t < hold, on(t), off)


def _lfo(t: torch.Tensor, rate: torch.Tensor, shape: torch.Tensor, delay: torch.Tensor) -> torch.Tensor:
    """LFO in [-1, 1] at times ``t`` (1, N): sine → triangle → square, faded in over ``delay`` seconds."""
    ph = rate * t
    sine = torch.sin(2.0 * math.pi * ph)
    tri = 4.0 * (torch.frac(ph + 0.75) - 0.5).abs() - 1.0
    square = torch.tanh(8.0 * sine)
    w_sine = (1.0 - 2.0 * shape).clamp(min=0.0)
    w_square = (2.0 * shape - 1.0).clamp(min=0.0)
    out = w_sine * sine + (1.0 - w_sine - w_square) * tri + w_square * square
    return out * (t / (delay + 1e-3)).clamp(0.0, 1.0)


def _upsample(x: torch.Tensor, length: int) -> torch.Tensor:
    """Control-rate points (B, N) at samples 0, 64, 128, ... → audio rate (B, length), linearly."""
    n = x.shape[-1]
    y = F.interpolate(x.unsqueeze(1), size=(n - 1) * CONTROL_BLOCK + 1, mode="linear", align_corners=True)
    return y[:, 0, :length]


def frame_size(sample_rate: int) -> int:
    """Filter frame: a power of two of about 23 ms (512 at 22.05 kHz, 1024 at 44.1 kHz)."""
    return 1 << max(6, round(math.log2(sample_rate * 0.0232)))


class SubtractiveSynth:
    """The default backend (see the module docstring). Stateless apart from the cached noise spectra."""

    name = "acids-sub"
    params = PARAMS
    subsets = SUBSETS
    differentiable = True
    deterministic = True

    def __init__(self) -> None:
        self._noise: dict[tuple[int, int], torch.Tensor] = {}

    # ---- framing (50 % overlap, sqrt-Hann analysis and synthesis: the windows' products add up to 1)

    @staticmethod
    def _window(n: int) -> torch.Tensor:
        return torch.sqrt(torch.hann_window(n, periodic=True))

    def _frames(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) → windowed spectra (B, K, n/2 + 1); frame k is centred on sample k * n/2."""
        h = n // 2
        T = x.shape[-1]
        k = -(-T // h) + 1  # frames: enough to cover [0, T) with a half frame of padding each side
        x = F.pad(x, (h, (k + 1) * h - T - h))
        return torch.fft.rfft(x.unfold(-1, n, h) * self._window(n), dim=-1)

    def _overlap_add(self, spec: torch.Tensor, n: int, length: int) -> torch.Tensor:
        h = n // 2
        frames = torch.fft.irfft(spec, n=n, dim=-1) * self._window(n)  # (B, K, n)
        first = F.pad(frames[..., :h], (0, 0, 0, 1))  # frame k's first half at block k
        second = F.pad(frames[..., h:], (0, 0, 1, 0))  # its second half at block k + 1
        y = (first + second).flatten(-2)
        return y[..., h : h + length]

    def _noise_spectrum(self, length: int, n: int) -> torch.Tensor:
        key = (length, n)
        if key not in self._noise:
            # a normal tensor even when first asked for under inference_mode: later renders may need grads
            with torch.inference_mode(False), torch.no_grad():
                g = torch.Generator().manual_seed(NOISE_SEED)
                table = torch.rand(1, length, generator=g) * 2.0 - 1.0
                self._noise[key] = self._frames(table, n)
        return self._noise[key]

    # ---- rendering

    def physical(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised (B, P) → {name: physical (B, 1)}."""
        if params.dim() != 2 or params.shape[1] != len(PARAMS):
            raise ValueError(f"params must be (B, {len(PARAMS)}), got {tuple(params.shape)}")
        return {p.name: p.to_physical(params[:, i : i + 1]) for i, p in enumerate(PARAMS)}

    def render(
        self,
        params: torch.Tensor,
        note: int | torch.Tensor = 60,
        velocity: int | torch.Tensor = 100,
        hold: float = 3.0,
        duration: float = 4.0,
        sample_rate: int = 22050,
    ) -> torch.Tensor:
        """Render (B, P) normalised parameters → (B, T) audio in [-1, 1], T = round(duration * rate).

        Args:
            params: normalised values in table order (clamped to [0, 1]).
            note: MIDI note (int, or (B,) tensor).
            velocity: MIDI velocity 1..127 (int, or (B,) tensor): scales the amplitude.
            hold: seconds before the note is released.
            duration: seconds rendered.
            sample_rate: Hz.
        """
        if duration <= 0 or sample_rate < 8000:
            raise ValueError("duration must be > 0 and sample_rate >= 8000")
        params = params.to(torch.float32).clamp(0.0, 1.0)
        B = params.shape[0]
        T = max(1, round(duration * sample_rate))
        p = self.physical(params)
        note_t = torch.as_tensor(note, dtype=torch.float32).reshape(-1, 1).expand(B, 1)
        vel_t = torch.as_tensor(velocity, dtype=torch.float32).reshape(-1, 1).expand(B, 1)

        # control rate: envelopes and LFO at samples 0, 64, ... (one point past the end)
        nc = -(-T // CONTROL_BLOCK) + 1
        tc = torch.arange(nc, dtype=torch.float32).unsqueeze(0) * (CONTROL_BLOCK / sample_rate)
        lfo_c = _lfo(tc, p["lfo_rate"], p["lfo_shape"], p["lfo_delay"])
        env1 = _adsr(tc, p["env1_attack"], p["env1_decay"], p["env1_sustain"], p["env1_release"], hold)
        lfo = _upsample(lfo_c, T)  # (B, T)

        # oscillators: phase in float64 (4 s of cycles would lose precision in float32)
        f_note = 440.0 * torch.exp2((note_t - 69.0) / 12.0)
        vib = (2.0 / 12.0) * p["lfo_pitch_depth"] * lfo  # octaves
        dt1 = (f_note / sample_rate) * torch.exp2(p["osc1_tune"] / 12.0 + vib)
        dt2 = (f_note / sample_rate) * torch.exp2((p["osc2_tune"] + p["osc2_fine"] / 100.0) / 12.0 + vib)
        dt1 = dt1.clamp(max=0.45)
        dt2 = dt2.clamp(max=0.45)
        ph1 = torch.frac(torch.cumsum(dt1.double(), dim=-1) - dt1.double()[:, :1]).float()
        ph2 = torch.frac(torch.cumsum(dt2.double(), dim=-1) - dt2.double()[:, :1]).float()
        pw = (p["pulse_width"] + 0.45 * p["lfo_pw_depth"] * lfo).clamp(0.05, 0.95)
        o1 = _oscillator(ph1, dt1, p["osc1_shape"], pw)
        o2 = _oscillator(ph2, dt2, p["osc2_shape"], pw)
        mix = o1 + p["osc_mix"] * (o2 - o1)
        mix = mix + p["ring_mod"] * (o1 * o2 - mix)

        # filters, frame by frame in the frequency domain
        n = frame_size(sample_rate)
        spec = self._frames(mix, n)  # (B, K, n/2 + 1)
        K, nb = spec.shape[1], spec.shape[2]
        freqs = torch.linspace(0.0, sample_rate / 2.0, nb).clamp(min=1.0)  # (nb,)
        tilt = torch.exp2(p["noise_color"] * torch.log2(freqs / 1000.0))  # (B, nb)
        spec = spec + (p["noise_level"] * tilt).unsqueeze(1) * self._noise_spectrum(T, n)

        tf = torch.arange(K, dtype=torch.float32).unsqueeze(0) * (n / 2 / sample_rate)
        env2 = _adsr(tf, p["env2_attack"], p["env2_decay"], p["env2_sustain"], p["env2_release"], hold)
        lfo_f = _lfo(tf, p["lfo_rate"], p["lfo_shape"], p["lfo_delay"])
        octaves = (
            5.0 * p["filter_env_amount"] * env2
            + 3.0 * p["filter_lfo_depth"] * lfo_f
            + p["filter_keytrack"] * (note_t - 60.0) / 12.0
        )
        cutoff = (p["filter_cutoff"] * torch.exp2(octaves)).clamp(20.0, 0.49 * sample_rate)  # (B, K)
        slope = p["filter_slope"].unsqueeze(-1)  # (B, 1, 1): 0 → 2 poles, 1 → 4 poles
        q = (0.7071 * (20.0 / 0.7071) ** p["filter_resonance"]).unsqueeze(-1)
        q = q ** (1.0 / (1.0 + slope))  # the 4-pole response squares the 2-pole one: keep its peak at Q
        x2 = (freqs / cutoff.unsqueeze(-1)).square()  # (B, K, nb)
        log_mag2 = -torch.log((1.0 - x2).square() + x2 / q.square())
        lowpass = torch.exp(0.5 * (1.0 + slope) * log_mag2)
        xh2 = (freqs / p["hpf_cutoff"]).square().square().unsqueeze(1)  # (B, 1, nb)
        highpass = torch.sqrt(xh2 / (1.0 + xh2))
        y = self._overlap_add(spec * (lowpass * highpass), n, T)

        # drive, then the amplifier
        gain = 1.0 + 9.0 * p["drive"]
        y = torch.tanh(gain * y) / math.tanh(1.0)
        tremolo = 1.0 - p["lfo_amp_depth"] * (0.5 + 0.5 * lfo)
        amp = _upsample(env1, T) * tremolo * (p["volume"] * vel_t / 127.0)
        return (y * amp).clamp(-1.0, 1.0)
