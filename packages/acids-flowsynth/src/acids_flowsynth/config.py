"""Configuration of FlowSynth models and training: frozen dataclasses and presets (stdlib only).

Presets:

| name    | what                                                                                   |
|---------|----------------------------------------------------------------------------------------|
| `paper` | the sizes and schedule of the paper and its code (arXiv 1907.00971, `code/train.py`)  |
| `tiny`  | a few thousand weights and a short schedule, for tests and smoke runs                  |

``model.kind`` picks the model of the paper's Table 1: ``mlp``, ``cnn`` and ``resnet`` (direct regression
baselines; ``resnet`` is the CNN with strided 1x1-convolution residual paths),
``ae``, ``vae``, ``wae`` (auto-encoders with an MLP regressor from z to the parameters), ``vae_flow`` (VAE
with an IAF posterior) and ``flow_reg`` (VAE_flow whose regressor is a MAF flow, the paper's proposal).
``model.n_params`` is set from the dataset by the trainer; the latent size equals it unless
``model.latent`` says otherwise (it must equal it for ``flow_reg``, whose regressor is invertible).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["mlp", "cnn", "resnet", "ae", "vae", "wae", "vae_flow", "flow_reg"]
KINDS = ("mlp", "cnn", "resnet", "ae", "vae", "wae", "vae_flow", "flow_reg")
AE_KINDS = ("ae", "vae", "wae", "vae_flow", "flow_reg")


@dataclass(frozen=True)
class InputConfig:
    """The model's input: the dataset's natural-log mel (64 bands), cropped or padded to ``n_frames``,
    turned into log(mel + eps) as the reference code, and standardised by the training set's mean and std
    (stored in the model)."""

    n_mels: int = 64
    n_frames: int = 80
    eps: float = 1e-3


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes. Defaults are the paper's.

    Attributes:
        kind: see the module docstring.
        n_params: parameters to predict (set by the trainer from the dataset).
        latent: latent size of the auto-encoders (0: n_params, as the paper).
        mlp_hidden, mlp_layers, dropout: the MLP baseline (5 x 2048, ELU, BN, dropout 0.3).
        cnn_channels, cnn_layers, kernel: the CNN (and ResNet) baselines' strided dilated 2-D
            convolutions (dilation 2^l, stride 2) ...
        cnn_hidden, cnn_mlp_layers: ... and its MLP head (3 x 2048).
        ae_channels, ae_hidden: encoder and decoder of the auto-encoders (the CNN halved).
        reg_hidden, reg_layers: the MLP regressor z → parameters (2 x 1024 in the paper).
        flow_length, flow_hidden: the IAF posterior (16 blocks) and the MAF regression flow.
    """

    kind: Kind = "flow_reg"
    n_params: int = 16
    latent: int = 0
    mlp_hidden: int = 2048
    mlp_layers: int = 5
    dropout: float = 0.3
    cnn_channels: int = 128
    cnn_layers: int = 5
    kernel: int = 7
    cnn_hidden: int = 2048
    cnn_mlp_layers: int = 3
    ae_channels: int = 64
    ae_hidden: int = 1024
    reg_hidden: int = 1024
    reg_layers: int = 2
    flow_length: int = 16
    flow_hidden: int = 64
    seed: int = 0

    @property
    def latent_dim(self) -> int:
        return self.latent or self.n_params


@dataclass(frozen=True)
class TrainConfig:
    """The paper's schedule (epochs are passes over the training split).

    Attributes:
        beta: the KL (or MMD) weight after its warm-up over ``warm_latent`` epochs (from 0).
        start_regress: the epoch the regression loss starts (auto-encoders; baselines regress at once).
        warm_regress: epochs of linear warm-up of the regression weight, up to ``reg_factor``.
        flow_reg_scale: multiplies ``reg_factor`` for the regression flow. The reference code uses x 0.1
            with a Gaussian likelihood summed over the parameters (about P / 2 x the MSE at unit
            variance); with the same per-parameter MSE as the MLP regressor here, 1 keeps the two alike.
        plateau_patience, plateau_factor: ReduceLROnPlateau on the validation loss.
        early_stop: stop after this many epochs without a validation improvement.
            Plateau and early stopping count only epochs after every warm-up (the loss changes meaning
            while the weights ramp up).
        noise: Gaussian input noise (std) applied to a fraction ``noise_prob`` of training examples.
    """

    batch_size: int = 64
    lr: float = 2e-4
    epochs: int = 500
    beta: float = 1.0
    warm_latent: int = 100
    start_regress: int = 100
    warm_regress: int = 100
    reg_factor: float = 1e3
    flow_reg_scale: float = 1.0
    plateau_patience: int = 20
    plateau_factor: float = 0.5
    early_stop: int = 60
    noise: float = 1e-2
    noise_prob: float = 0.333
    grad_clip: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class FlowSynthConfig:
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        m, problems = self.model, []
        if m.kind not in KINDS:
            problems.append(f"model.kind must be one of {', '.join(KINDS)}, got {m.kind!r}")
        if m.n_params < 1:
            problems.append("model.n_params must be >= 1")
        if m.kind == "flow_reg" and m.latent not in (0, m.n_params):
            problems.append("flow_reg needs model.latent = 0 or n_params (its regressor is invertible)")
        if m.kind in ("vae_flow", "flow_reg") and m.flow_length < 1:
            problems.append("model.flow_length must be >= 1 for flow models")
        if m.cnn_layers < 1 or m.mlp_layers < 1 or m.reg_layers < 1 or m.kernel < 1:
            problems.append("layer counts and kernel must be >= 1")
        if not 0 <= m.dropout < 1:
            problems.append("model.dropout must be in [0, 1)")
        if self.input.n_mels < 4 or self.input.n_frames < 4:
            problems.append("input.n_mels and input.n_frames must be >= 4")
        if self.train.batch_size < 2:
            problems.append("train.batch_size must be >= 2 (batch norm)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def is_ae(self) -> bool:
        return self.model.kind in AE_KINDS


def _paper() -> FlowSynthConfig:
    return FlowSynthConfig()


def _tiny() -> FlowSynthConfig:
    return FlowSynthConfig(
        model=ModelConfig(
            mlp_hidden=32,
            mlp_layers=2,
            dropout=0.0,
            cnn_channels=4,
            cnn_layers=3,
            kernel=3,
            cnn_hidden=32,
            cnn_mlp_layers=2,
            ae_channels=4,
            ae_hidden=32,
            reg_hidden=32,
            reg_layers=2,
            flow_length=2,
            flow_hidden=16,
        ),
        train=TrainConfig(
            batch_size=16,
            lr=3e-3,
            epochs=40,
            warm_latent=5,
            start_regress=2,
            warm_regress=3,
            reg_factor=1000.0,
            plateau_patience=5,
            early_stop=15,
        ),
    )


PRESETS = {"paper": _paper, "tiny": _tiny}


def preset(name: str) -> FlowSynthConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


def with_params(cfg: FlowSynthConfig, n_params: int) -> FlowSynthConfig:
    """The config with ``model.n_params`` set (the trainer calls it with the dataset's subset size)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_params=int(n_params)))
