"""Configuration of a DDSP model: frozen dataclasses and named presets (stdlib only).

Presets (see :data:`PRESETS`; parameter counts include the reverb IR):

| name        | rate   | hop | frames/s | decoder (width, layers/stack, GRU) | harmonics | params  |
|-------------|--------|-----|----------|------------------------------------|-----------|---------|
| `full`      | 16 kHz | 128 | 125      | 512, 3, 512 (as the paper)         | 100       | 4.84 M  |
| `full-48k`  | 48 kHz | 512 | 93.75    | as `full`                          | 100       | 4.87 M  |
| `small`     | 16 kHz | 128 | 125      | 128, 1, 192                        | 60        | 0.35 M  |
| `small-48k` | 48 kHz | 512 | 93.75    | as `small`                         | 60        | 0.38 M  |
| `tiny`      | 16 kHz | 64  | 250      | 16, 1, 16                          | 8         | 4,452   |

The autoencoder variants add an MFCC encoder (:class:`EncoderConfig`) whose latent z enters the decoder
through its own input MLP (the decoder's GRU and output MLP then see three embeddings):

| name           | as          | encoder (n_fft, mels, MFCCs, GRU, z) | params (encoder) |
|----------------|-------------|--------------------------------------|------------------|
| `full-ae`      | `full`      | 1024, 128, 30, 512, 16               | 7.27 M (0.84 M)  |
| `small-ae`     | `small`     | 1024, 64, 30, 64, 16                 | 0.46 M (19,532)  |
| `small-48k-ae` | `small-48k` | 2048, 64, 30, 64, 16                 | 0.49 M (19,532)  |
| `tiny-ae`      | `tiny`      | 256, 24, 12, 8, 4                    | 6,176 (588)      |

Any preset becomes one with ``--set encoder.kind=mfcc`` (with the full-size encoder defaults).

Hops are powers of two so that a host buffer (nn~: a power of two, 4096 by default) is a whole number of
frames. The exact parameter counts are printed by ``acids-ddsp info`` and checked by the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

#: the multi-scale FFT sizes of the reference implementations at 16 kHz (magenta SpectralLoss)
REFERENCE_FFT_SIZES_16K = (2048, 1024, 512, 256, 128, 64)


@dataclass(frozen=True)
class DecoderConfig:
    """The control network: separate input MLPs for f0 and loudness, a GRU, an output MLP.

    Attributes:
        hidden: width of every MLP layer.
        mlp_layers: Linear + LayerNorm + LeakyReLU layers per MLP stack (>= 1).
        gru: GRU hidden size.
        f0_scale: "midi" (MIDI note / 127, as magenta) or "loghz" (log2(f0 / 20 Hz) / log2(20 kHz / 20 Hz)).
        db_range: loudness is clamped to [-db_range, 0] dB and fed as dB / db_range + 1 (in [0, 1]).
    """

    hidden: int = 512
    mlp_layers: int = 3
    gru: int = 512
    f0_scale: Literal["midi", "loghz"] = "midi"
    db_range: float = 100.0


@dataclass(frozen=True)
class EncoderConfig:
    """The optional MFCC encoder of the autoencoder variant (the DDSP paper's z encoder, made causal).

    Frame i reads the ``n_fft`` samples that end with its own hop, ``[(i + 1) * hop - n_fft, (i + 1) * hop)``
    (zeros before the start), so z never looks ahead and streams exactly. Its Hann-windowed magnitude
    spectrum goes through ``n_mels`` mel bands (20 Hz to Nyquist), a log, a DCT-II to ``n_mfcc``
    coefficients, a per-frame LayerNorm (causal, unlike magenta's instance norm over time), a GRU and a
    linear layer to ``z_dim`` values per frame.

    Attributes:
        kind: "none" (f0 + loudness only) or "mfcc" (the autoencoder variant).
        z_dim: latent size per frame.
        n_fft: analysis window in samples; a multiple of the hop.
        n_mels: mel bands.
        n_mfcc: MFCCs kept (<= n_mels).
        gru: GRU hidden size.
    """

    kind: Literal["none", "mfcc"] = "none"
    z_dim: int = 16
    n_fft: int = 1024
    n_mels: int = 128
    n_mfcc: int = 30
    gru: int = 512


@dataclass(frozen=True)
class SynthConfig:
    """The differentiable synthesizers.

    Attributes:
        n_harmonics: harmonics of the additive synthesizer (those above Nyquist are removed per frame).
        n_noise_bands: magnitude bands of the noise filter; its FIR has 2 * (n_noise_bands - 1) taps.
        noise_bias: added to the noise logits before the exp-sigmoid (starts the noise quiet, as magenta).
        noise_seed: seed of the position-hashed noise used in eval mode (streamed == offline).
        reverb: a trainable reverb impulse response after the synthesizers (on by default).
        reverb_seconds: length of the impulse response.
    """

    n_harmonics: int = 100
    n_noise_bands: int = 65
    noise_bias: float = -5.0
    noise_seed: int = 0
    reverb: bool = True
    reverb_seconds: float = 1.0


@dataclass(frozen=True)
class LossConfig:
    """Multi-scale spectral loss (L1 on linear and log magnitudes).

    Attributes:
        fft_sizes: FFT sizes; empty = the reference sizes (2048 ... 64 at 16 kHz) times sample_rate / 16 kHz.
        overlap: window overlap (hop = size * (1 - overlap)).
        mag_weight: weight of the linear-magnitude term.
        logmag_weight: weight of the log-magnitude term.
        eps: added before the log.
    """

    fft_sizes: tuple[int, ...] = ()
    overlap: float = 0.75
    mag_weight: float = 1.0
    logmag_weight: float = 1.0
    eps: float = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (used by ``acids-ddsp train`` only)."""

    batch_size: int = 16
    crop_seconds: float = 4.0
    lr: float = 1e-3
    lr_decay: float = 0.98
    lr_decay_steps: int = 10_000
    grad_clip: float = 3.0
    steps: int = 30_000
    seed: int = 0


@dataclass(frozen=True)
class DDSPConfig:
    """A complete DDSP model. ``hop`` is the synthesis block and the feature hop (one frame per hop)."""

    sample_rate: int = 16000
    hop: int = 128
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate < 1000:
            problems.append(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.hop < 1:
            problems.append(f"hop must be >= 1, got {self.hop}")
        if self.decoder.mlp_layers < 1 or self.decoder.hidden < 1 or self.decoder.gru < 1:
            problems.append("decoder.hidden, decoder.gru and decoder.mlp_layers must be >= 1")
        if self.decoder.db_range <= 0:
            problems.append("decoder.db_range must be > 0")
        if self.synth.n_harmonics < 1:
            problems.append("synth.n_harmonics must be >= 1")
        if self.synth.n_noise_bands < 2:
            problems.append("synth.n_noise_bands must be >= 2")
        if self.synth.reverb and self.synth.reverb_seconds <= 0:
            problems.append("synth.reverb_seconds must be > 0 when synth.reverb is on")
        e = self.encoder
        if e.kind != "none":
            if min(e.z_dim, e.n_mels, e.n_mfcc, e.gru) < 1:
                problems.append("encoder.z_dim, n_mels, n_mfcc and gru must be >= 1")
            if e.n_mfcc > e.n_mels:
                problems.append(f"encoder.n_mfcc ({e.n_mfcc}) must be <= encoder.n_mels ({e.n_mels})")
            if self.hop >= 1 and (e.n_fft < self.hop or e.n_fft % self.hop):
                problems.append(f"encoder.n_fft ({e.n_fft}) must be a multiple of the hop ({self.hop})")
        if not 0 <= self.loss.overlap < 1:
            problems.append("loss.overlap must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def z_dim(self) -> int:
        """Latent size per frame (0 without an encoder)."""
        return self.encoder.z_dim if self.encoder.kind != "none" else 0

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def realtime_hop(self) -> bool:
        """True when the hop is a power of two (divides any power-of-two host buffer at least as large)."""
        return self.hop & (self.hop - 1) == 0

    @property
    def reverb_length(self) -> int:
        """Impulse response length in samples (0 without reverb)."""
        return max(1, round(self.synth.reverb_seconds * self.sample_rate)) if self.synth.reverb else 0

    @property
    def fft_sizes(self) -> tuple[int, ...]:
        """The loss's FFT sizes, resolved for this sample rate."""
        return self.loss.fft_sizes or reference_fft_sizes(self.sample_rate)


def reference_fft_sizes(sample_rate: int) -> tuple[int, ...]:
    """The reference FFT sizes scaled with the rate: 2048 ... 64 at 16 kHz, 6144 ... 192 at 48 kHz."""
    return tuple(max(16, round(n * sample_rate / 16000)) for n in REFERENCE_FFT_SIZES_16K)


def _full() -> DDSPConfig:
    return DDSPConfig()


def _full_48k() -> DDSPConfig:
    return DDSPConfig(sample_rate=48000, hop=512)


def _small() -> DDSPConfig:
    return DDSPConfig(
        decoder=DecoderConfig(hidden=128, mlp_layers=1, gru=192),
        synth=SynthConfig(n_harmonics=60, n_noise_bands=65),
        train=TrainConfig(batch_size=8, crop_seconds=2.0),
    )


def _small_48k() -> DDSPConfig:
    return dataclasses.replace(_small(), sample_rate=48000, hop=512)


def _tiny() -> DDSPConfig:
    return DDSPConfig(
        sample_rate=16000,
        hop=64,
        decoder=DecoderConfig(hidden=16, mlp_layers=1, gru=16),
        synth=SynthConfig(n_harmonics=8, n_noise_bands=9, reverb_seconds=0.05),
        train=TrainConfig(batch_size=4, crop_seconds=1.0, lr=3e-3, steps=200),
    )


def _full_ae() -> DDSPConfig:
    return dataclasses.replace(_full(), encoder=EncoderConfig(kind="mfcc"))


def _small_ae() -> DDSPConfig:
    return dataclasses.replace(_small(), encoder=EncoderConfig(kind="mfcc", z_dim=16, n_mels=64, gru=64))


def _small_48k_ae() -> DDSPConfig:
    enc = EncoderConfig(kind="mfcc", z_dim=16, n_fft=2048, n_mels=64, gru=64)
    return dataclasses.replace(_small_48k(), encoder=enc)


def _tiny_ae() -> DDSPConfig:
    return dataclasses.replace(
        _tiny(), encoder=EncoderConfig(kind="mfcc", z_dim=4, n_fft=256, n_mels=24, n_mfcc=12, gru=8)
    )


PRESETS = {
    "full": _full,
    "full-48k": _full_48k,
    "small": _small,
    "small-48k": _small_48k,
    "tiny": _tiny,
    "full-ae": _full_ae,
    "small-ae": _small_ae,
    "small-48k-ae": _small_48k_ae,
    "tiny-ae": _tiny_ae,
}


def preset(name: str) -> DDSPConfig:
    """A named preset (KeyError naming the choices otherwise)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
