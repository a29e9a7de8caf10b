"""The DDSP model: f0 + loudness (+ z) frames → decoder → harmonic + noise synthesis → reverb → audio."""

import torch
import torch.nn.functional as F
from torch import nn

from acids_ddsp.config import DDSPConfig
from acids_ddsp.dsp import exp_sigmoid, hz_to_midi
from acids_ddsp.encoder import MfccEncoder
from acids_ddsp.synths import FilteredNoise, HarmonicSynth, Reverb


def mlp(in_size: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` × (Linear → LayerNorm → LeakyReLU), as the DDSP decoders' FC stacks."""
    mods: list[nn.Module] = []
    size = in_size
    for _ in range(layers):
        mods += [nn.Linear(size, hidden), nn.LayerNorm(hidden), nn.LeakyReLU()]
        size = hidden
    return nn.Sequential(*mods)


class Bf16Linear(nn.Module):
    """Inference copy of an ``nn.Linear`` whose weight is bfloat16 (half the bytes to read per call).

    The float32 input is cast to bfloat16 for the product (float32 accumulation in oneDNN), the result
    back to float32 before the float32 bias.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype) + self.bias


class InferenceGRU(nn.Module):
    """Inference copy of a one-layer ``batch_first`` ``nn.GRU`` with its weights in ``dtype`` (bfloat16).

    The input projection of the whole block is one matrix product, then each frame multiplies the state
    by the recurrent weights; gates and state stay float32 (the GRU equations of ``torch.nn.GRU``).
    Same call signature as the GRU: ``(x (B, T, in), h0 (1, B, H) or None) -> (y (B, T, H), h (1, B, H))``.
    """

    def __init__(self, gru: nn.GRU, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError("InferenceGRU copies one-layer, unidirectional, batch-first GRUs with biases")
        self.hidden_size = gru.hidden_size
        self.w_ih = nn.Parameter(gru.weight_ih_l0.detach().to(dtype), requires_grad=False)
        self.w_hh = nn.Parameter(gru.weight_hh_l0.detach().to(dtype), requires_grad=False)
        self.b_ih = nn.Parameter(gru.bias_ih_l0.detach().clone(), requires_grad=False)
        self.b_hh = nn.Parameter(gru.bias_hh_l0.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.w_ih.dtype
        gi = F.linear(x.to(dtype), self.w_ih).to(x.dtype) + self.b_ih  # (B, T, 3H), all frames at once
        h = h0[0] if h0 is not None else x.new_zeros(x.shape[0], self.hidden_size)
        outs: list[torch.Tensor] = []
        for t in range(x.shape[1]):
            gh = F.linear(h.to(dtype), self.w_hh).to(x.dtype) + self.b_hh
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = n + z * (h - n)
            outs.append(h)
        if len(outs) == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), h.unsqueeze(0)
        return torch.stack(outs, dim=1), h.unsqueeze(0)


def to_bfloat16(module: nn.Module) -> None:
    """Replace, in place, every ``nn.Linear`` and one-layer ``nn.GRU`` under ``module`` by its bfloat16
    inference copy (:class:`Bf16Linear`, :class:`InferenceGRU`). Irreversible; inference only."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Bf16Linear(child))
        elif isinstance(child, nn.GRU):
            setattr(module, name, InferenceGRU(child, torch.bfloat16))
        else:
            to_bfloat16(child)


class Decoder(nn.Module):
    """Controls from f0, loudness (and z): one input MLP *each* (not shared), a GRU, an output MLP.

    The output MLP sees the input embeddings and the GRU output (magenta's RnnFcDecoder), and one linear
    head gives 1 amplitude + K harmonic + n_bands noise logits per frame. With an encoder (``z_dim`` > 0)
    the latent z has its own input MLP, as f0 and loudness.
    """

    streaming: bool
    has_z: bool

    def __init__(self, cfg: DDSPConfig) -> None:
        super().__init__()
        d, s = cfg.decoder, cfg.synth
        self.f0_scale = d.f0_scale
        self.db_range = d.db_range
        self.f0_mlp = mlp(1, d.hidden, d.mlp_layers)
        self.loudness_mlp = mlp(1, d.hidden, d.mlp_layers)
        self.has_z = cfg.z_dim > 0
        self.z_mlp = mlp(cfg.z_dim, d.hidden, d.mlp_layers) if self.has_z else nn.Identity()
        inputs = (3 if self.has_z else 2) * d.hidden
        self.gru = nn.GRU(inputs, d.gru, batch_first=True)
        self.out_mlp = mlp(inputs + d.gru, d.hidden, d.mlp_layers)
        self.head = nn.Linear(d.hidden, 1 + s.n_harmonics + s.n_noise_bands)
        self.streaming = False
        self.register_buffer("state", torch.zeros(1, 0, d.gru), persistent=False)

    def reset(self) -> None:
        self.state = torch.zeros(1, 0, self.gru.hidden_size, device=self.state.device)

    def scale_f0(self, f0: torch.Tensor) -> torch.Tensor:
        if self.f0_scale == "midi":
            return hz_to_midi(f0) / 127.0
        # log2(f0 / 20 Hz) / log2(1000): 0 at 20 Hz, 1 at 20 kHz (a literal: TorchScript has no globals)
        return (torch.log2(f0.clamp(min=20.0) / 20.0) / 9.965784284662087).clamp(max=1.0)

    def scale_loudness(self, loudness_db: torch.Tensor) -> torch.Tensor:
        return loudness_db.clamp(-self.db_range, 0.0) / self.db_range + 1.0

    def forward(
        self, f0: torch.Tensor, loudness: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: f0 (B, F) Hz, loudness (B, F) dB, z (B, F, z_dim) with an encoder.

        Returns: (B, F, 1 + K + n_bands) logits.
        """
        hf = self.f0_mlp(self.scale_f0(f0).unsqueeze(-1))
        hl = self.loudness_mlp(self.scale_loudness(loudness).unsqueeze(-1))
        if self.has_z:
            if z is None:
                raise ValueError("this decoder needs z (B, F, z_dim)")
            h = torch.cat([hf, hl, self.z_mlp(z)], dim=-1)
        else:
            h = torch.cat([hf, hl], dim=-1)
        if self.streaming and self.state.shape[1] == f0.shape[0]:
            g, state = self.gru(h, self.state)
        else:
            g, state = self.gru(h)
        if self.streaming:
            self.state = state
        return self.head(self.out_mlp(torch.cat([h, g], dim=-1)))


class DDSP(nn.Module):
    """A DDSP instrument model.

    ``forward(f0, loudness)``: frames in (f0 in Hz, loudness in dB as computed by
    ``acids_data.features``), ``hop`` samples of audio out per frame. Frame i drives samples
    [i*hop, (i+1)*hop), so a model is causal at frame granularity and streams block by block.

    The autoencoder variant (``cfg.encoder.kind == "mfcc"``) also takes the audio the features come from,
    ``forward(f0, loudness, audio)``: its encoder turns it into z frames (z[i] from audio up to the end of
    frame i). Without ``audio`` it uses ``z_mean``, the training set's mean z (stored by training).
    ``encode(audio)`` and ``decode(f0, loudness, z)`` are the two halves.
    """

    streaming: bool
    has_encoder: bool

    def __init__(self, cfg: DDSPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop = cfg.hop
        self.n_harmonics = cfg.synth.n_harmonics
        self.noise_bias = cfg.synth.noise_bias
        self.z_dim = cfg.z_dim
        self.has_encoder = cfg.z_dim > 0
        self.encoder = MfccEncoder(cfg) if self.has_encoder else nn.Identity()
        # persistent only for the autoencoder variant (checkpoints of the others keep their keys)
        self.register_buffer("z_mean", torch.zeros(cfg.z_dim), persistent=self.has_encoder)
        self.decoder = Decoder(cfg)
        self.harmonic = HarmonicSynth(cfg.sample_rate, cfg.hop, cfg.synth.n_harmonics)
        self.noise = FilteredNoise(cfg.hop, cfg.synth.n_noise_bands, cfg.synth.noise_seed)
        self.use_reverb = cfg.synth.reverb
        self.reverb = (
            Reverb(cfg.sample_rate, cfg.reverb_length, cfg.hop) if cfg.synth.reverb else nn.Identity()
        )
        self.streaming = False

    @torch.jit.ignore
    def set_precision(self, precision: str) -> None:
        """Inference precision of the decoder's and encoder's weights: ``"fp32"`` (default) or ``"bf16"``.

        ``"bf16"`` keeps every Linear and GRU weight in bfloat16 (activations, LayerNorm, GRU state and
        the synthesizers stay float32): a streaming call reads half the weight bytes, which is its cost at
        the ``full`` size. For TorchScript/nn~ on CPUs with bfloat16 arithmetic (AVX512-BF16, AMX, Arm
        BF16), not for ONNX. Irreversible on this instance; within about 1e-2 relative (RMS) of float32.
        """
        bf16 = any(isinstance(m, (Bf16Linear, InferenceGRU)) for m in self.modules())
        if precision == "fp32":
            if bf16:
                raise ValueError("this instance already holds bfloat16 weights: rebuild it for fp32")
            return
        if precision != "bf16":
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if self.training:
            raise ValueError("bfloat16 weights are for inference: call .eval() first")
        if not bf16:
            to_bfloat16(self.decoder)
            to_bfloat16(self.encoder)

    def set_streaming(self, flag: bool) -> None:
        """Switch streaming on or off; either way the state starts fresh."""
        self.streaming = flag
        for m in (self.encoder, self.decoder, self.harmonic, self.noise, self.reverb):
            if hasattr(m, "streaming"):
                m.streaming = flag
            if hasattr(m, "reset"):
                m.reset()

    @torch.jit.export
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) or (B, 1, T) audio, T a multiple of the hop → z (B, T // hop, z_dim) (autoencoder only)."""
        if not self.has_encoder:
            raise ValueError("this model has no encoder (encoder.kind = none)")
        return self.encoder(audio)

    def _latent(
        self, f0: torch.Tensor, audio: torch.Tensor | None, z: torch.Tensor | None
    ) -> torch.Tensor | None:
        if not self.has_encoder:
            return None
        if z is not None:
            return z
        if audio is not None:
            if audio.shape[-1] != f0.shape[-1] * self.hop:
                raise ValueError("audio must have hop samples per f0/loudness frame")
            return self.encoder(audio)
        return self.z_mean.expand(f0.shape[0], f0.shape[-1], self.z_dim)

    @torch.jit.export
    def controls(
        self,
        f0: torch.Tensor,
        loudness: torch.Tensor,
        audio: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Controls of (B, F) frames: amplitude (B, F), harmonics (B, F, K), noise (B, F, n_bands).

        With an encoder, z (B, F, z_dim) is ``z`` if given, else encoded from ``audio`` (B, [1,] F * hop),
        else ``z_mean``.
        """
        logits = self.decoder(f0, loudness, self._latent(f0, audio, z))
        k = self.n_harmonics
        amplitude = exp_sigmoid(logits[..., 0])
        distribution = exp_sigmoid(logits[..., 1 : 1 + k])
        noise = exp_sigmoid(logits[..., 1 + k :] + self.noise_bias)
        return amplitude, distribution, noise

    def synthesize(
        self, f0: torch.Tensor, amplitude: torch.Tensor, distribution: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """(B, F) controls → (B, F * hop) audio (harmonic + noise, then reverb)."""
        audio = self.harmonic(f0, amplitude, distribution) + self.noise(noise)
        return self.reverb(audio)

    @torch.jit.export
    def decode(self, f0: torch.Tensor, loudness: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, F) f0 and loudness, (B, F, z_dim) z → (B, 1, F * hop) audio (autoencoder only)."""
        if not self.has_encoder:
            raise ValueError("this model has no encoder (encoder.kind = none)")
        amplitude, distribution, noise = self.controls(f0, loudness, None, z)
        return self.synthesize(f0, amplitude, distribution, noise).unsqueeze(1)

    def forward(
        self, f0: torch.Tensor, loudness: torch.Tensor, audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args: f0 (B, F) or (B, 1, F) in Hz; loudness the same shape in dB; audio (B, [1,] F * hop) for
        the autoencoder variant (None: the training set's mean z; ignored without an encoder).

        Returns: (B, 1, F * hop).
        """
        if f0.dim() == 3:
            f0 = f0.squeeze(1)
        if loudness.dim() == 3:
            loudness = loudness.squeeze(1)
        amplitude, distribution, noise = self.controls(f0, loudness, audio, None)
        return self.synthesize(f0, amplitude, distribution, noise).unsqueeze(1)


def build(cfg: DDSPConfig) -> DDSP:
    return DDSP(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
