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
    back to float32 before the float32 bias. (``dtype=torch.float32`` keeps the weight as it is.)
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(dtype), requires_grad=False)
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype) + self.bias


class Int8Linear(nn.Module):
    """Inference copy of an ``nn.Linear`` with int8 weights (a quarter of the bytes) and an int8 product.

    Weights: symmetric per output channel, ``W ≈ q * w_scale`` with ``q`` in [-127, 127]. Inputs:
    symmetric per *row* (per frame), quantized on the fly, then one ``torch._int_mm`` (exact int32
    accumulation) and ``acc * x_scale * w_scale + bias`` in float32. Every row is quantized on its own and
    the integer sums are exact, so a frame's output does not depend on the other frames of the call: a
    stream equals the offline run bit for bit, whatever the block sizes (per-tensor dynamic quantization,
    ``torch.ao``'s, would not: its input scale spans the whole call).

    ``input_bound`` > 0: the inputs are known to lie in [-input_bound, input_bound] (the GRU state, in
    [-1, 1]), so one fixed input scale replaces the per-row one (fewer operators per recurrent step).
    """

    input_bound: float

    def __init__(self, linear: nn.Linear, input_bound: float = 0.0) -> None:
        super().__init__()
        self.input_bound = float(input_bound)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        # torch._int_mm's right operand is (in, out): stored (in, out) contiguous for blocks of frames; the
        # recurrent one-row product is 2.5x faster on the transposed view of an (out, in) matrix (gemv)
        self.register_buffer("weight_t", q.t() if input_bound > 0.0 else q.t().contiguous())
        self.register_buffer("w_scale", scale)
        # fixed input scale folded into the weight scale (used when input_bound > 0)
        self.register_buffer("out_scale", scale * (self.input_bound / 127.0))
        bias = linear.bias.detach().clone() if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.flatten(0, -2) if x.dim() > 2 else x  # (frames, in)
        if rows.shape[0] == 0:
            return rows.new_zeros(0, self.bias.shape[0]).unflatten(0, x.shape[:-1])
        if self.input_bound > 0.0:
            xq = torch.round(rows * (127.0 / self.input_bound)).clamp_(-127.0, 127.0).to(torch.int8)
            acc = torch._int_mm(xq, self.weight_t).to(x.dtype)
            y = torch.addcmul(self.bias, acc, self.out_scale)
        else:
            x_scale = rows.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
            xq = torch.round(rows / x_scale).to(torch.int8)
            y = torch._int_mm(xq, self.weight_t).to(x.dtype) * (x_scale * self.w_scale) + self.bias
        return y.unflatten(0, x.shape[:-1]) if x.dim() > 2 else y


def _inference_linear(linear: nn.Linear, dtype: torch.dtype) -> nn.Module:
    return Int8Linear(linear) if dtype == torch.int8 else Bf16Linear(linear, dtype)


class InferenceGRU(nn.Module):
    """Inference copy of a one-layer ``batch_first`` ``nn.GRU`` with its weights in ``dtype`` (bfloat16,
    int8 as :class:`Int8Linear`, or float32).

    The input projection of the whole block is one matrix product, then each frame multiplies the state
    by the recurrent weights; gates and state stay float32 (the GRU equations of ``torch.nn.GRU``).
    Same call signature as the GRU: ``(x (B, T, in), h0 (1, B, H) or None) -> (y (B, T, H), h (1, B, H))``.
    """

    def __init__(self, gru: nn.GRU, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError("InferenceGRU copies one-layer, unidirectional, batch-first GRUs with biases")
        self.hidden_size = gru.hidden_size
        ih = nn.Linear(gru.input_size, 3 * gru.hidden_size)
        hh = nn.Linear(gru.hidden_size, 3 * gru.hidden_size)
        with torch.no_grad():
            ih.weight.copy_(gru.weight_ih_l0)
            ih.bias.copy_(gru.bias_ih_l0)
            hh.weight.copy_(gru.weight_hh_l0)
            hh.bias.copy_(gru.bias_hh_l0)
        self.ih = _inference_linear(ih, dtype)
        # the state is a convex combination of tanh outputs (and of a state in [-1, 1]): bounded by 1
        self.hh = Int8Linear(hh, input_bound=1.0) if dtype == torch.int8 else Bf16Linear(hh, dtype)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hs = self.hidden_size
        gi = self.ih(x)  # (B, T, 3H), all frames at once
        gi_rz, gi_n = gi[..., : 2 * hs], gi[..., 2 * hs :]
        h = h0[0] if h0 is not None else x.new_zeros(x.shape[0], hs)
        outs: list[torch.Tensor] = []
        for t in range(x.shape[1]):
            gh = self.hh(h)
            rz = torch.sigmoid(gi_rz[:, t] + gh[:, : 2 * hs])  # reset and update gates in one operator
            n = torch.tanh(torch.addcmul(gi_n[:, t], rz[:, :hs], gh[:, 2 * hs :]))
            h = torch.lerp(n, h, rz[:, hs:])  # n + z * (h - n)
            outs.append(h)
        if len(outs) == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden_size), h.unsqueeze(0)
        return torch.stack(outs, dim=1), h.unsqueeze(0)


def int8_gru_recurrence(
    gi: torch.Tensor, h: torch.Tensor, weight_t: torch.Tensor, out_scale: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The GRU recurrence of :class:`Int8GRU` over input projections ``gi`` (B, T, 3H) from state ``h``
    (B, H): per frame the state, bounded by 1, is quantized with the fixed scale 1/127, multiplied by the
    int8 recurrent weights ``weight_t`` (H, 3H) (``acc * out_scale + bias``), then the float32 gates."""
    hs = h.shape[-1]
    outs: list[torch.Tensor] = []
    for t in range(gi.shape[1]):
        hq = torch.round(h * 127.0).clamp_(-127.0, 127.0).to(torch.int8)
        gh = torch.addcmul(bias, torch._int_mm(hq, weight_t).to(h.dtype), out_scale)
        rz = torch.sigmoid(gi[:, t, : 2 * hs] + gh[:, : 2 * hs])  # reset and update gates in one operator
        n = torch.tanh(torch.addcmul(gi[:, t, 2 * hs :], rz[:, :hs], gh[:, 2 * hs :]))
        h = torch.lerp(n, h, rz[:, hs:])  # n + z * (h - n)
        outs.append(h)
    if len(outs) == 0:
        return gi.new_zeros(gi.shape[0], 0, hs), h
    return torch.stack(outs, dim=1), h


_SCRIPTED_RECURRENCE: list[torch.jit.ScriptFunction] = []


class Int8GRU(InferenceGRU):
    """:class:`InferenceGRU` with int8 weights whose frame loop runs compiled (TorchScript) in eager mode
    too: :func:`int8_gru_recurrence`, the same operators as the module loop, without the Python overhead
    per frame (a third of the offline decoder's time at the ``full`` size)."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__(gru, torch.int8)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        gi = self.ih(x)  # (B, T, 3H), all frames at once
        h = h0[0] if h0 is not None else x.new_zeros(x.shape[0], self.hidden_size)
        hh = self.hh
        assert isinstance(hh, Int8Linear)
        if torch.jit.is_scripting():
            y, h = int8_gru_recurrence(gi, h, hh.weight_t, hh.out_scale, hh.bias)
        else:
            y, h = self._compiled(gi, h, hh.weight_t, hh.out_scale, hh.bias)
        return y, h.unsqueeze(0)

    @torch.jit.unused
    def _compiled(
        self, gi: torch.Tensor, h: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _SCRIPTED_RECURRENCE:
            import warnings

            with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of torch.export
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                _SCRIPTED_RECURRENCE.append(torch.jit.script(int8_gru_recurrence))
        return _SCRIPTED_RECURRENCE[0](gi, h, w, scale, bias)


INT8_MIN_IN_FEATURES = 16  # narrower Linears (the 1-input first layers of the f0/loudness MLPs) stay float32


def to_inference_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Replace, in place, every ``nn.Linear`` and one-layer ``nn.GRU`` under ``module`` by its inference
    copy with ``dtype`` weights (bfloat16: :class:`Bf16Linear`; int8: :class:`Int8Linear`, Linears with at
    least ``INT8_MIN_IN_FEATURES`` inputs; GRUs: :class:`InferenceGRU`, :class:`Int8GRU`). Irreversible;
    inference only."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if dtype != torch.int8 or child.in_features >= INT8_MIN_IN_FEATURES:
                setattr(module, name, _inference_linear(child, dtype))
        elif isinstance(child, nn.GRU):
            setattr(module, name, Int8GRU(child) if dtype == torch.int8 else InferenceGRU(child, dtype))
        else:
            to_inference_weights(child, dtype)


def to_bfloat16(module: nn.Module) -> None:
    """:func:`to_inference_weights` with bfloat16 weights."""
    to_inference_weights(module, torch.bfloat16)


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
        """Inference precision of the decoder's and encoder's weights: ``"fp32"`` (default), ``"bf16"`` or
        ``"int8"``.

        ``"bf16"`` keeps every Linear and GRU weight in bfloat16 (activations, LayerNorm, GRU state and
        the synthesizers stay float32): a streaming call reads half the weight bytes, which is its cost at
        the ``full`` size. For TorchScript/nn~ on CPUs with bfloat16 arithmetic (AVX512-BF16, AMX, Arm
        BF16), not for ONNX. Within about 1e-2 relative (RMS) of float32.

        ``"int8"`` keeps them in int8 with one scale per output channel and multiplies int8 inputs
        quantized per frame (:class:`Int8Linear`): a quarter of the bytes, integer products (faster
        offline too), a stream still equal to the offline run. About 3e-2 relative (RMS) of float32
        (measure the model at hand: see the README). CPU (TorchScript/nn~ and eager), not ONNX.

        Either is irreversible on this instance (copy the model first to keep float32).
        """
        dtypes = {"bf16": torch.bfloat16, "int8": torch.int8}
        current = self.precision()
        if precision == current:
            return
        if precision != "fp32" and precision not in dtypes:
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'int8', got {precision!r}")
        if current != "fp32":
            raise ValueError(f"this instance already holds {current} weights: rebuild it for {precision}")
        if self.training:
            raise ValueError(f"{precision} weights are for inference: call .eval() first")
        to_inference_weights(self.decoder, dtypes[precision])
        to_inference_weights(self.encoder, dtypes[precision])

    @torch.jit.ignore
    def precision(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"int8"``: the decoder's weights (:meth:`set_precision`)."""
        for m in self.modules():
            if isinstance(m, Int8Linear):
                return "int8"
            if isinstance(m, Bf16Linear) and m.weight.dtype == torch.bfloat16:
                return "bf16"
        return "fp32"

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
