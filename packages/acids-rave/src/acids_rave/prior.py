"""A causal prior over a RAVE model's latent frames, for generation without an input.

Data: the posterior means of a trained model in its PCA coordinates, cut to the dims kept at its
fidelity (``Rave.encode``): sequences (D, T) of latent frames. Each dim is standardised with the
training split's mean and standard deviation and quantised into ``bins`` equiprobable bins of the
standard normal CDF (edges ``Φ⁻¹(k / bins)``); a bin decodes to its conditional mean under N(0, 1),
``bins · (φ(a) − φ(b))`` for the bin (a, b).

Model (:class:`LatentPrior`): WaveNet-like. The input at position t is frame t − 1 (dequantised,
standardised values, plus a "start" channel that marks position 0), so the output at t sees frames < t
only. A 1×1 input convolution, ``layers`` gated residual units (causal dilated convolution to 2C channels,
``tanh · sigmoid``, 1×1 residual and 1×1 skip convolutions; dilations ``1, 2, …, 2**(cycle−1)``
repeated), then ReLU → 1×1 → ReLU → 1×1 to ``D × bins`` logits. All dims of frame t are predicted
from the past frames only, independently given the past: no ordering inside a frame (the official
prior's "diagonal shift" conditions dim d on dims < d of the same frame; this one does not).

Sampling (:func:`sample`) is autoregressive: the logits of the next frame are computed over the last
``receptive_field`` frames only (bit-identical to the full causal forward, tested), divided by the
temperature and sampled with a seeded generator (temperature 0: the arg-max bin).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from acids_rave.config import PriorConfig, validate_prior


def bin_edges(bins: int) -> torch.Tensor:
    """The ``bins − 1`` inner edges of equiprobable bins of N(0, 1): ``Φ⁻¹(k / bins)``, float64."""
    k = torch.arange(1, bins, dtype=torch.float64)
    return torch.special.ndtri(k / bins)


def bin_values(bins: int) -> torch.Tensor:
    """The conditional mean of N(0, 1) in each equiprobable bin, float64 (bins,)."""
    edges = torch.cat([torch.tensor([-math.inf]), bin_edges(bins), torch.tensor([math.inf])]).double()
    pdf = torch.exp(-0.5 * edges.nan_to_num(posinf=0.0, neginf=0.0) ** 2) / math.sqrt(2 * math.pi)
    pdf[0] = pdf[-1] = 0.0  # φ(±∞)
    # E[x | a < x < b] = (φ(a) − φ(b)) / (Φ(b) − Φ(a)), and Φ(b) − Φ(a) = 1 / bins
    return bins * (pdf[:-1] - pdf[1:])


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values): which weights a prior belongs to.

    Computed on the unfused model (as it is stored in its checkpoint), so it does not depend on the
    checkpoint's file (creation time, optimizer state) but changes with any weight or the latent PCA.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _CausalConv(nn.Conv1d):
    """A 1-d convolution padded on the left only: output t sees inputs <= t."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1):
        super().__init__(cin, cout, kernel, dilation=dilation)
        self.left = (kernel - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(F.pad(x, (self.left, 0)), self.weight, self.bias)


class _GatedUnit(nn.Module):
    """Causal dilated conv → tanh · sigmoid → (residual 1×1 + input, skip 1×1)."""

    def __init__(self, channels: int, skip: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = _CausalConv(channels, 2 * channels, kernel, dilation)
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.conv(x).chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return x + self.res(h), self.skip(h)


class LatentPrior(nn.Module):
    """Causal prior over ``dims`` latent dims, each quantised into ``cfg.bins`` bins.

    Buffers ``latent_mean`` / ``latent_std`` (D,) standardise the latents (set from the training split
    with :meth:`set_statistics`); ``edges`` and ``values`` are the bins (see the module docstring).
    """

    __jit_unused_properties__ = ["receptive_field"]  # scripted samplers read it once, as an int

    def __init__(self, cfg: PriorConfig, dims: int):
        super().__init__()
        validate_prior(cfg)
        if dims < 1:
            raise ValueError("a prior needs at least one latent dim")
        self.cfg = cfg
        self.dims = dims
        self.bins = cfg.bins
        self.register_buffer("latent_mean", torch.zeros(dims))
        self.register_buffer("latent_std", torch.ones(dims))
        self.register_buffer("edges", bin_edges(cfg.bins).float())
        self.register_buffer("values", bin_values(cfg.bins).float())
        self.inp = nn.Conv1d(dims + 1, cfg.channels, 1)
        self.dilations = [2 ** (i % cfg.cycle) for i in range(cfg.layers)]
        self.units = nn.ModuleList(
            _GatedUnit(cfg.channels, cfg.skip_channels, cfg.kernel_size, d) for d in self.dilations
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1),
            nn.ReLU(),
            nn.Conv1d(cfg.skip_channels, dims * cfg.bins, 1),
        )

    @property
    def receptive_field(self) -> int:
        """Past frames the logits of a frame depend on (the stack's receptive field, in input positions)."""
        return 1 + sum((self.cfg.kernel_size - 1) * d for d in self.dilations)

    # --- quantisation -----------------------------------------------------------------------------
    @torch.no_grad()
    def set_statistics(self, latents: torch.Tensor) -> None:
        """Standardisation from training latents (N, D, T) or (D, T): per-dim mean and std."""
        z = latents.transpose(0, 1).reshape(self.dims, -1) if latents.dim() == 3 else latents
        if z.shape[0] != self.dims:
            raise ValueError(f"expected {self.dims} latent dims, got {z.shape[0]}")
        z = z.double()
        self.latent_mean.copy_(z.mean(1).float())
        self.latent_std.copy_(z.std(1).clamp_min(1e-6).float())

    def quantise(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, D, T) -> bin indices (B, D, T), int64 in [0, bins)."""
        u = (z - self.latent_mean[:, None]) / self.latent_std[:, None]
        return torch.bucketize(u.contiguous(), self.edges)

    def standardised(self, k: torch.Tensor) -> torch.Tensor:
        """Bin indices (B, D, T) -> the bins' values in standard units (B, D, T)."""
        return self.values[k]

    def dequantise(self, k: torch.Tensor) -> torch.Tensor:
        """Bin indices (B, D, T) -> latents (B, D, T) (inverse of the standardisation)."""
        return self.standardised(k) * self.latent_std[:, None] + self.latent_mean[:, None]

    # --- the network -------------------------------------------------------------------------------
    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (B, D + 1, T) -> logits (B, D, bins, T); position t sees inputs <= t."""
        h = self.inp(x)
        skips = None
        for unit in self.units:
            h, s = unit(h)
            skips = s if skips is None else skips + s
        out = self.head(skips)
        return out.reshape(out.shape[0], self.dims, self.bins, out.shape[-1])

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Standardised frames (B, D, T) -> logits (B, D, bins, T); frame t's logits see frames < t only."""
        b, _, t = values.shape
        start = torch.zeros(b, self.dims + 1, 1, dtype=values.dtype, device=values.device)
        start[:, -1] = 1.0
        flag = torch.zeros(b, 1, t - 1, dtype=values.dtype, device=values.device)
        shifted = torch.cat([values[..., : t - 1], flag], dim=1)
        return self._stack(torch.cat([start, shifted], dim=-1))

    def next_logits(self, past: torch.Tensor) -> torch.Tensor:
        """Logits (B, D, bins) of frame n from the standardised frames (B, D, n) before it.

        Runs the stack over the last ``receptive_field`` frames only: the same numbers as ``forward`` on
        the whole sequence, at a cost that does not grow with n.
        """
        b, _, n = past.shape
        r = self.receptive_field
        flag = torch.zeros(b, 1, min(n, r), dtype=past.dtype, device=past.device)
        x = torch.cat([past[..., max(n - r, 0) :], flag], dim=1)
        if n < r:
            start = torch.zeros(b, self.dims + 1, 1, dtype=past.dtype, device=past.device)
            start[:, -1] = 1.0
            x = torch.cat([start, x], dim=-1)
        return self._stack(x)[..., -1]

    def cross_entropy(self, k: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per dim and frame) of bin indices (B, D, T) under teacher forcing."""
        logits = self(self.standardised(k))
        return F.cross_entropy(logits.transpose(1, 2), k)  # classes on dim 1


@torch.no_grad()
def sample(
    prior: LatentPrior,
    frames: int,
    *,
    batch: int = 1,
    temperature: float = 1.0,
    seed: int | None = 0,
) -> torch.Tensor:
    """Autoregressive sampling: ``frames`` latent frames (B, D, frames), in the model's latent units.

    Each step samples every dim's bin from ``softmax(logits / temperature)`` with a generator seeded
    by ``seed`` (None: the global RNG); ``temperature == 0`` takes the arg-max bin (deterministic).
    """
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    device = prior.values.device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
    past = torch.zeros(batch, prior.dims, 0, device=device)
    ks = []
    for _ in range(frames):
        logits = prior.next_logits(past)  # (B, D, bins)
        if temperature == 0:
            k = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.double() / temperature, dim=-1).reshape(-1, prior.bins)
            k = torch.multinomial(probs, 1, generator=gen).reshape(batch, prior.dims)
        ks.append(k)
        past = torch.cat([past, prior.standardised(k)[..., None]], dim=-1)
    return prior.dequantise(torch.stack(ks, dim=-1))


def marginal_cross_entropy(train: torch.Tensor, valid: torch.Tensor, bins: int) -> float:
    """Cross-entropy (nats per dim and frame) of ``valid`` bin indices (N, D, T) under the per-dim bin
    frequencies of ``train`` (add-one smoothed): the baseline that uses no context at all."""
    d = train.shape[1]
    idx = train.transpose(0, 1).reshape(d, -1)
    counts = torch.ones(d, bins, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64))
    logp = (counts / counts.sum(1, keepdim=True)).log()
    v = valid.transpose(0, 1).reshape(d, -1)
    return float(-logp.gather(1, v).mean())


def prior_info(prior: LatentPrior) -> dict[str, Any]:
    """A few numbers for logs and records."""
    return {
        "dims": prior.dims,
        "bins": prior.bins,
        "receptive_field": prior.receptive_field,
        "parameters": sum(p.numel() for p in prior.parameters()),
    }


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply, full avalanche) of int64 tensors holding 32-bit values.

    int64 products wrap on overflow, which keeps their low 32 bits exact: the masks make it a 32-bit
    hash with the same result on every platform and in TorchScript.
    """
    mask = 0xFFFFFFFF
    x = x & mask
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & mask
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & mask
    return x ^ (x >> 16)


def hashed_gumbel(seed: int, position: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Gumbel(0, 1) noise (*position.shape, B, D, bins) for frames ``position`` (int64) from a hash of
    (seed, position, batch item, dim, bin): the same numbers however a sequence is cut into calls."""
    b, d, k = shape[0], shape[1], shape[2]
    cell = torch.arange(b * d * k, dtype=torch.long, device=position.device).reshape(b, d, k)
    pos = position.unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
    key = _mix32(torch.full_like(pos, seed)) ^ _mix32(pos >> 32)
    key = _mix32(_mix32(key) ^ (pos & 0xFFFFFFFF))
    h = _mix32(_mix32(cell ^ key) + cell)
    u = (h.double() + 0.5) / 4294967296.0  # in (0, 1)
    return (-torch.log(-torch.log(u))).float()


class StreamingSampler(nn.Module):
    """A prior's sampler with one input and one output, for nn~ (scriptable).

    ``forward(temperature (B, 1, T)) -> latents (B, D, T)``: one latent frame per input value, sampled
    from ``softmax(logits / temperature)`` by the Gumbel-max rule with :func:`hashed_gumbel` noise (a
    temperature <= 0 takes the most likely bin). Each frame runs one position through the network: every
    gated unit keeps the last ``(kernel - 1) * dilation`` inputs of its dilated convolution (zeros at the
    start of a sequence, as the causal padding), so a frame costs the same whatever the receptive field.
    Streaming keeps those caches, the network's next input and the frame count between calls, so calls
    continue one sequence; offline every call starts a new one. Either way frame ``n`` of a sequence gets
    the same noise, so a stream cut into blocks gives the sequence of one call, and the same ``seed`` the
    same sequence. With temperature 0 the frames are those of :func:`sample` at temperature 0.
    """

    def __init__(self, prior: LatentPrior, streaming: bool = True):
        super().__init__()
        self.prior = prior
        self.dims = prior.dims
        self.bins = prior.bins
        self.receptive_field = prior.receptive_field
        self.channels = prior.cfg.channels
        self.spans = [(prior.cfg.kernel_size - 1) * d for d in prior.dilations]
        self.offsets = [sum(self.spans[:i]) for i in range(len(self.spans))]
        self.streaming = streaming
        self.seed = 0
        # the units' caches side by side on time: unit i owns spans[i] frames from offsets[i]
        self.register_buffer("caches", torch.zeros(0), persistent=False)
        self.register_buffer("next_input", torch.zeros(0), persistent=False)
        self.register_buffer("position", torch.zeros((), dtype=torch.long), persistent=False)

    def set_seed(self, seed: int) -> None:
        """Another noise sequence; restarts the stream."""
        self.seed = int(seed)
        self.caches = torch.zeros(0, device=self.caches.device)
        self.next_input = torch.zeros(0, device=self.next_input.device)
        self.position = torch.zeros((), dtype=torch.long, device=self.position.device)

    def _step(self, x: torch.Tensor, caches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One input position (B, D + 1) -> logits (B, D, bins) of the next frame, new caches.

        Every convolution at one position is a matrix-vector product: the 1x1 ones on the channel
        vector, the dilated ones on the ``kernel`` taps of the unit's window (a convolution call costs
        ~40 us of set-up, the product a few).
        """
        inp = self.prior.inp
        h = F.linear(x, inp.weight[:, :, 0], inp.bias)  # (B, C)
        skips = torch.zeros(0)
        out: list[torch.Tensor] = []
        i = 0
        for unit in self.prior.units:
            start, span = self.offsets[i], self.spans[i]
            window = torch.cat([caches[..., start : start + span], h[..., None]], -1)  # (B, C, span + 1)
            out.append(window[..., 1:])
            w = unit.conv.weight  # (2C, C, k)
            taps = window[..., :: unit.conv.dilation[0]].reshape(h.shape[0], -1)  # (B, C * k), (c, k) order
            a, g = F.linear(taps, w.reshape(w.shape[0], -1), unit.conv.bias).chunk(2, dim=1)
            z = torch.tanh(a) * torch.sigmoid(g)
            h = h + F.linear(z, unit.res.weight[:, :, 0], unit.res.bias)
            s = F.linear(z, unit.skip.weight[:, :, 0], unit.skip.bias)
            skips = s if i == 0 else skips + s
            i += 1
        mid, last = self.prior.head[1], self.prior.head[3]
        hidden = F.relu(F.linear(F.relu(skips), mid.weight[:, :, 0], mid.bias))
        logits = F.linear(hidden, last.weight[:, :, 0], last.bias)
        return logits.reshape(x.shape[0], self.dims, self.bins), torch.cat(out, -1)

    def forward(self, temperature: torch.Tensor) -> torch.Tensor:
        b, t = temperature.shape[0], temperature.shape[-1]
        x, position, caches = self.next_input, self.position, self.caches
        if not self.streaming or x.dim() != 2 or x.shape[0] != b:
            x = torch.zeros(b, self.dims + 1, dtype=temperature.dtype, device=temperature.device)
            x[:, -1] = 1.0  # the start position
            position = torch.zeros((), dtype=torch.long, device=temperature.device)
            caches = torch.zeros(b, self.channels, sum(self.spans), dtype=x.dtype, device=x.device)
        if t == 0:
            return torch.zeros(b, self.dims, 0, dtype=temperature.dtype, device=temperature.device)
        frames: list[torch.Tensor] = []
        flag = torch.zeros(b, 1, dtype=temperature.dtype, device=temperature.device)
        steps = position + torch.arange(t, dtype=torch.long, device=temperature.device)
        noises = hashed_gumbel(self.seed, steps, [b, self.dims, self.bins]).to(temperature.dtype)
        for i in range(t):
            logits, caches = self._step(x, caches)
            tau = temperature[:, 0, i]
            drawn = (logits / tau.clamp_min(1e-6)[:, None, None] + noises[i]).argmax(-1)
            k = torch.where((tau > 0)[:, None], drawn, logits.argmax(-1))
            values = self.prior.values[k]  # (B, D) standardised
            frames.append(values)
            x = torch.cat([values, flag], 1)
        if self.streaming:
            self.next_input, self.caches = x, caches
            self.position = position + t
        z = torch.stack(frames, -1)
        return z * self.prior.latent_std[:, None] + self.prior.latent_mean[:, None]
