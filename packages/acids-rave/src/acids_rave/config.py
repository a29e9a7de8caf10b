"""RAVE configuration: frozen dataclasses (stdlib only) and the named presets.

Presets (``acids-rave train --config NAME``):

=============  =======================================================================================
``v2``         default: RAVE v2 (capacity 96, ratios 4-4-4-2, 128 latents, MPD + MSD), causal, 44.1 kHz
``v1``         the paper model (capacity 64, BatchNorm encoder, loudness + noise branches, MSD), causal
``small``      v2 at capacity 48, ratios 4-2-2-2 (compression 512) + noise: real time on small CPUs
``tiny``       a toy of a few thousand parameters for tests (capacity 4, compression 64)
``v2-offline`` ``v2`` with centred (non-causal) convolutions: better offline quality, no streaming
=============  =======================================================================================

Each has a ``-48k`` twin (``v2-48k``, ``small-48k``...) that only changes ``sample_rate``; the same is done
with ``--set sample_rate=48000`` on any preset. Nothing in the architecture depends on the rate, but a
model is trained and used at one rate only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Dilations = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class PQMFConfig:
    n_band: int = 16
    #: filter length in frames of n_band samples (N = n_band * taps_per_band)
    taps_per_band: int = 16
    #: Kaiser window beta of the prototype (9: best reconstruction at 16 taps per band, ~64 dB SNR)
    beta: float = 9.0


@dataclass(frozen=True)
class EncoderConfig:
    #: "v2": dilated residual units + strided convs; "v1": BatchNorm + strided convs (paper)
    kind: Literal["v1", "v2"] = "v2"
    capacity: int = 96
    #: down-sampling per stage (after the PQMF); channels double at each stage
    ratios: tuple[int, ...] = (4, 4, 4, 2)
    #: residual dilated units of each stage (v2 only)
    dilations: Dilations = ((1, 3, 9), (1, 3, 9), (1, 3, 9), (1, 3))
    kernel_size: int = 3


@dataclass(frozen=True)
class NoiseConfig:
    enabled: bool = False
    hidden: int = 64
    #: down-sampling from band frames to noise frames
    ratios: tuple[int, ...] = (2, 2, 2)
    #: filter-shape points per PQMF band
    noise_bands: int = 5
    #: True: the branch is part of the decoder from step 0 and phase 1's reconstruction loss trains it
    #: (upstream v2_small). False: it is added at the phase switch (upstream v1), faded in linearly over
    #: ``fade_in_steps`` phase-2 steps (an untrained branch switched on at once costs accuracy)
    from_phase1: bool = True
    fade_in_steps: int = 1_000


@dataclass(frozen=True)
class DecoderConfig:
    #: "v2": upsampling + dilated residual units, amplitude modulation; "v1": residual stacks + loudness
    kind: Literal["v1", "v2"] = "v2"
    capacity: int = 96
    #: residual dilated units per stage (stages run in reverse ratio order; v2 reverses each list too)
    dilations: Dilations = ((1, 3, 9), (1, 3, 9), (1, 3, 9), (1, 3))
    kernel_size: int = 3
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass(frozen=True)
class DiscriminatorConfig:
    capacity: int = 96
    n_layers: int = 4
    #: multi-scale discriminator: number of scales (average-pooled by 2 each)
    n_scales: int = 3
    #: multi-period discriminator periods; empty for none
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    #: multi-resolution spectral discriminator FFT sizes; empty for none (off in v2, as upstream)
    spectral_scales: tuple[int, ...] = ()


@dataclass(frozen=True)
class LossConfig:
    #: STFT sizes of the multi-scale spectral distance (hop = size / 4)
    scales: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    #: STFT sizes of the distance between PQMF bands (at the band rate)
    multiband_scales: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    log_epsilon: float = 1e-7
    #: KL weight: warm-up from beta_start to beta over beta_warmup_steps (log-linear)
    beta: float = 0.1
    beta_start: float = 1e-6
    beta_warmup_steps: int = 20_000
    adversarial: float = 1.0
    #: applied once (upstream multiplies it twice: 20 -> 400 effective)
    feature_matching: float = 20.0
    #: feature matching as relative L1 (v2) or plain L1 (v1)
    relative_feature_matching: bool = True


@dataclass(frozen=True)
class InitConfig:
    """Initial weights of the autoencoder (the discriminators keep PyTorch's default).

    PyTorch's default convolution init (upstream's) draws every bias at random and gives each output
    channel a weight norm of ~0.58, so each trunk layer shrinks its input's level while the random biases
    add an input-independent part: at step 0 the decoder's output does not depend on its latent
    (measured: two different recordings give outputs that differ by 2e-5 of their level, `small`, `v2`,
    `v1`), and short runs shut the waveform branch's gate (`small`, `v2`: the output is the same quiet
    noise for any input; `v1`: the noise branch alone). Measured with tools/bench/rave_learning.py; the
    package README, section Quality, "Initialisation".
    """

    #: every convolution bias of the autoencoder starts at zero (False: PyTorch's uniform draw). Keeps the
    #: waveform gate of `small`, `v2` and `v1` open in the first hundreds of steps (as drawn, it shuts)
    zero_bias: bool = True
    #: weight-norm gain of the trunk convolutions at init: the encoder's input, strided and last
    #: convolutions, the decoder's input and up-sampling ones (not the residual units' convolutions, not
    #: the output layers). 1.39 = sqrt(2 / (1 + 0.2**2)) is variance-preserving through LeakyReLU(0.2):
    #: `small` follows its input within 750 steps with it; `v2` and `v1` blow up with it (latent SNR
    #: 0.04 -> 3.5 in 100 steps, the output 7x too loud, then the gate saturates shut). 0: PyTorch's default
    trunk_gain: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    batch: int = 8
    #: samples per training example (a multiple of the compression ratio)
    n_signal: int = 131_072
    #: generator (encoder + decoder) learning rate at step 0, decayed linearly to ``lr_end`` at
    #: ``phase1_steps`` and kept there in phase 2 (upstream: 1e-3 -> 1e-4, LinearLR over phase 1)
    lr: float = 1e-3
    lr_end: float = 1e-4
    #: discriminator learning rate (upstream 1e-4)
    lr_discriminator: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    #: phase 1 (VAE + spectral) steps, then phase 2 (adversarial, encoder frozen)
    phase1_steps: int = 1_000_000
    max_steps: int = 6_000_000
    #: one discriminator update every N phase-2 steps
    update_discriminator_every: int = 1
    #: the generator's adversarial and feature-matching weights ramp linearly from 0 to their values
    #: over the first N phase-2 steps, while the discriminator (untrained at the switch) trains at full
    #: rate; the spectral distance keeps its weight throughout. 0: full weights at the switch
    adversarial_warmup_steps: int = 10_000
    val_every: int = 10_000
    save_every: int = 10_000
    valid_fraction: float = 0.02
    #: random gain of each example, dB range (actually applied, unlike upstream's RandomGain)
    gain_db: tuple[float, float] = (-6.0, 0.0)
    seed: int = 0
    grad_clip: float | None = None


@dataclass(frozen=True)
class RaveConfig:
    sample_rate: int = 44_100
    channels: int = 1
    latent_size: int = 128
    #: causal convolutions and PQMF: streamable, with a small algorithmic latency
    causal: bool = True
    pqmf: PQMFConfig = field(default_factory=PQMFConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)

    @property
    def compression_ratio(self) -> int:
        r = self.pqmf.n_band
        for x in self.encoder.ratios:
            r *= x
        return r


def _v2() -> RaveConfig:
    return RaveConfig()


def _v1() -> RaveConfig:
    return RaveConfig(
        encoder=EncoderConfig(kind="v1", capacity=64),
        decoder=DecoderConfig(
            kind="v1",
            capacity=64,
            dilations=((1, 1), (3, 1), (5, 1)),
            noise=NoiseConfig(enabled=True, hidden=64, ratios=(4, 4, 4), noise_bands=5),
        ),
        discriminator=DiscriminatorConfig(capacity=64, periods=()),
        loss=LossConfig(feature_matching=10.0, relative_feature_matching=False),
    )


def _small() -> RaveConfig:
    return RaveConfig(
        encoder=EncoderConfig(capacity=48, ratios=(4, 2, 2, 2)),
        decoder=DecoderConfig(
            capacity=48, noise=NoiseConfig(enabled=True, hidden=64, ratios=(2, 2, 2), noise_bands=32)
        ),
        discriminator=DiscriminatorConfig(capacity=48),
        train=TrainConfig(update_discriminator_every=2),
        init=InitConfig(trunk_gain=1.39),
    )


def _tiny() -> RaveConfig:
    dil = ((1, 3), (1,))
    return RaveConfig(
        latent_size=4,
        pqmf=PQMFConfig(n_band=16, taps_per_band=8, beta=8.0),
        encoder=EncoderConfig(capacity=4, ratios=(2, 2), dilations=dil),
        decoder=DecoderConfig(capacity=4, dilations=dil),
        discriminator=DiscriminatorConfig(capacity=4, n_layers=2, n_scales=2, periods=(2, 3)),
        loss=LossConfig(scales=(512, 256, 128), multiband_scales=(64, 32, 16), beta_warmup_steps=10),
        train=TrainConfig(
            batch=4,
            n_signal=8192,
            lr=1e-3,
            lr_end=1e-3,
            lr_discriminator=1e-3,
            phase1_steps=20,
            max_steps=40,
            val_every=10,
            adversarial_warmup_steps=0,
        ),
    )


def _offline(make):  # type: ignore[no-untyped-def]
    return lambda: dataclasses.replace(make(), causal=False)


def _at(make, sr: int):  # type: ignore[no-untyped-def]
    return lambda: dataclasses.replace(make(), sample_rate=sr)


_BASE = {"v2": _v2, "v1": _v1, "small": _small, "tiny": _tiny, "v2-offline": _offline(_v2)}

#: preset name -> factory of a RaveConfig
PRESETS = {**_BASE, **{f"{k}-48k": _at(f, 48_000) for k, f in _BASE.items()}}

DEFAULT_PRESET = "v2"


def load_config(source: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> RaveConfig:
    """Resolve a config: a preset name or TOML file (default ``v2``), then ``--set`` overrides."""
    from acids_core import config as core_config

    cfg = core_config.load(RaveConfig, source or DEFAULT_PRESET, list(overrides), presets=PRESETS)
    validate(cfg)
    return cfg


def validate(cfg: RaveConfig) -> None:
    """Raise ValueError on settings that cannot build a model."""
    if len(cfg.encoder.dilations) != len(cfg.encoder.ratios) and cfg.encoder.kind == "v2":
        raise ValueError("encoder.dilations needs one tuple per encoder ratio")
    if cfg.decoder.kind == "v2" and len(cfg.decoder.dilations) != len(cfg.encoder.ratios):
        raise ValueError("decoder.dilations needs one tuple per encoder ratio (v2)")
    t = cfg.train
    if min(t.lr, t.lr_end, t.lr_discriminator) <= 0:
        raise ValueError("train.lr, train.lr_end and train.lr_discriminator must be > 0")
    if t.adversarial_warmup_steps < 0 or cfg.decoder.noise.fade_in_steps < 0:
        raise ValueError("train.adversarial_warmup_steps and decoder.noise.fade_in_steps must be >= 0")
    if cfg.init.trunk_gain < 0:
        raise ValueError("init.trunk_gain must be >= 0 (0: PyTorch's default init)")
    if cfg.latent_size < 1 or cfg.channels < 1:
        raise ValueError("latent_size and channels must be >= 1")
    if cfg.train.n_signal % cfg.compression_ratio:
        raise ValueError(
            f"train.n_signal={cfg.train.n_signal} is not a multiple of the compression ratio "
            f"{cfg.compression_ratio}"
        )
    if cfg.decoder.noise.enabled:
        r = 1
        for x in cfg.decoder.noise.ratios:
            r *= x
        if (cfg.compression_ratio // cfg.pqmf.n_band) % r:
            raise ValueError(
                "the product of decoder.noise.ratios must divide the latent frame (in band frames)"
            )


# --- latent prior (``acids-rave train-prior`` / ``generate``) ---------------------------------------


@dataclass(frozen=True)
class PriorConfig:
    """A causal prior over a RAVE model's latent frames (see :mod:`acids_rave.prior`).

    Each kept latent dim is standardised (train-split mean and std) and quantised into ``bins``
    equiprobable bins of the standard normal CDF; a causal dilated conv stack (gated residual units with
    skips, dilations ``1, 2, ..., 2**(cycle-1)`` repeated) predicts the bins of frame t from frames < t.
    """

    bins: int = 32
    channels: int = 64
    skip_channels: int = 64
    layers: int = 8
    kernel_size: int = 3
    #: dilations 1, 2, 4, ... 2**(cycle - 1), repeated over the layers
    cycle: int = 4
    # training
    batch: int = 16
    #: latent frames per training example (at most the frames of one dataset chunk)
    frames: int = 128
    lr: float = 1e-3
    max_steps: int = 2000
    val_every: int = 100
    save_every: int = 100
    #: fraction of source files held out for the validation cross-entropy
    valid_fraction: float = 0.1
    seed: int = 0
    grad_clip: float | None = 1.0


def _prior_small() -> PriorConfig:
    return PriorConfig()


def _prior_tiny() -> PriorConfig:
    return PriorConfig(
        channels=16, skip_channels=16, layers=4, kernel_size=2, batch=8, frames=32, lr=3e-3,
        max_steps=120, val_every=40, save_every=40,
    )  # fmt: skip


def _prior_large() -> PriorConfig:
    # the official prior's size (10 layers, residual 512, skip 256, cycle 4, kernel 3): a GPU preset
    return PriorConfig(channels=512, skip_channels=256, layers=10, batch=8, max_steps=1_000_000)


#: prior preset name -> factory; ``small`` is the default (minutes on one CPU core)
PRIOR_PRESETS = {"small": _prior_small, "tiny": _prior_tiny, "large": _prior_large}
DEFAULT_PRIOR_PRESET = "small"


def validate_prior(cfg: PriorConfig) -> None:
    """Raise ValueError on prior settings that cannot build or train a model."""
    if cfg.bins < 2:
        raise ValueError("bins must be >= 2")
    if min(cfg.channels, cfg.skip_channels, cfg.layers, cfg.cycle) < 1 or cfg.kernel_size < 2:
        raise ValueError("channels, skip_channels, layers and cycle must be >= 1, kernel_size >= 2")
    if min(cfg.batch, cfg.frames, cfg.max_steps + 1, cfg.val_every, cfg.save_every) < 1:
        raise ValueError("batch, frames, val_every and save_every must be >= 1, max_steps >= 0")
    if cfg.lr <= 0 or not 0 < cfg.valid_fraction < 1:
        raise ValueError("lr must be > 0 and valid_fraction in (0, 1)")


def load_prior_config(source: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> PriorConfig:
    """Resolve a prior config: a preset name or TOML file (default ``small``), then ``--set`` overrides."""
    from acids_core import config as core_config

    cfg = core_config.load(
        PriorConfig, source or DEFAULT_PRIOR_PRESET, list(overrides), presets=PRIOR_PRESETS
    )
    validate_prior(cfg)
    return cfg
