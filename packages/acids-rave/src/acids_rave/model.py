"""RAVE: PQMF -> convolutional encoder -> VAE latent -> decoder (waveform, amplitude, noise) -> PQMF⁻¹.

Shapes: audio (B, C, T) with T a multiple of the compression ratio R = n_band * prod(ratios) (offline
calls pad the end and crop the output back); latents (B, D, T / R).

``encode`` returns the posterior mean (deterministic), projected on the latent PCA and cut to the
``latent_dims`` kept at the chosen fidelity; ``decode`` takes those ``latent_dims`` (or all
``latent_size``) channels and fills the dropped dimensions with their mean (zero in PCA coordinates),
never with random noise. Before the latent analysis the projection is the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from acids_rave.blocks import (
    Conv1d,
    DilatedUnit,
    LeakyReLU,
    ResidualPair,
    Upsample,
    fuse_weight_norm,
    set_streaming,
)
from acids_rave.config import RaveConfig, validate
from acids_rave.pqmf import PQMF


def _prod(xs: tuple[int, ...]) -> int:
    return math.prod(xs) if xs else 1


class EncoderV2(nn.Module):
    """Bands (B, C*M, F) -> (B, 2 * latent, F / prod(ratios)): dilated residual units + strided convs."""

    def __init__(self, cfg: RaveConfig):
        super().__init__()
        e, causal = cfg.encoder, cfg.causal
        c = e.capacity
        layers: list[nn.Module] = [Conv1d(cfg.channels * cfg.pqmf.n_band, c, 7, causal=causal)]
        for i, r in enumerate(e.ratios):
            for d in e.dilations[i]:
                layers.append(DilatedUnit(c, e.kernel_size, d, causal))
            layers += [LeakyReLU(inplace=True), Conv1d(c, 2 * c, 2 * r, stride=r, causal=causal)]
            c *= 2
        layers += [LeakyReLU(inplace=True), Conv1d(c, 2 * cfg.latent_size, 3, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderV1(nn.Module):
    """The paper's encoder: conv, then per ratio [BatchNorm, LeakyReLU, strided conv], channels doubling."""

    def __init__(self, cfg: RaveConfig):
        super().__init__()
        e, causal = cfg.encoder, cfg.causal
        c = e.capacity
        layers: list[nn.Module] = [Conv1d(cfg.channels * cfg.pqmf.n_band, c, 7, causal=causal)]
        for r in e.ratios:
            layers += [nn.BatchNorm1d(c), LeakyReLU(), Conv1d(c, 2 * c, 2 * r + 1, stride=r, causal=causal)]
            c *= 2
        layers += [LeakyReLU(inplace=True), Conv1d(c, 2 * cfg.latent_size, 5, groups=2, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_in, n_out): ``v @ W`` is ``F.interpolate(v, n_out, mode="linear", align_corners=True)``."""
    w = torch.zeros(n_in, n_out, dtype=torch.float64)
    if n_in == 1 or n_out == 1:
        w[0, :] = 1.0
        return w.float()
    for j in range(n_out):
        s = j * (n_in - 1) / (n_out - 1)
        i = min(math.floor(s), n_in - 2)
        frac = s - i
        w[i, j] += 1.0 - frac
        w[i + 1, j] += frac
    return w.float()


def _dft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real DFT of length ``n`` as matrices: forward (n, 2 * bins), inverse (2 * bins, n).

    ``x @ fwd`` is ``cat(rfft(x).real, rfft(x).imag)`` and ``spec @ inv`` is ``irfft(spec, n)`` (the
    imaginary parts of the DC and Nyquist bins are ignored, as irfft does).
    """
    bins = n // 2 + 1
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * t / n
    fwd = torch.cat([torch.cos(angle), -torch.sin(angle)]).T
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    inv = torch.cat([weight * torch.cos(angle), -weight * torch.sin(angle)]) / n
    return fwd.float().contiguous(), inv.float().contiguous()


class NoiseGenerator(nn.Module):
    """Filtered noise per band: hidden (B, H, F) -> noise (B, C*M, F).

    Strided convs give one spectral envelope (``noise_bands`` points, up to 1) per noise frame of
    L = prod(ratios) band samples; white noise blocks of L samples are shaped by it in the frequency
    domain. Everything is matrix products (no FFT, no interpolate: exportable to nn~ and to ONNX for
    every board profile): a fixed linear-interpolation matrix takes the envelope to the L / 2 + 1 DFT
    bins, a real-DFT basis gives the noise spectrum and the inverse basis the shaped noise.

    The noise itself: in training mode, fresh ``torch.rand`` every call. In eval mode and in any
    TorchScript/ONNX export it is read from a fixed table of white-noise spectra (``table_frames``
    frames per band, from a fixed seed: a period of 16384 band samples, ~6 s at 44.1 kHz), at a frame
    position that starts at 0 for an offline call and, when streaming, continues from the previous
    call (the ``position`` buffer, the only state: zero is a fresh stream). So eval-mode output is
    deterministic, streaming equals offline with the noise on, and an exported artifact matches eager.
    """

    def __init__(self, in_channels: int, out_bands: int, cfg: RaveConfig):
        super().__init__()
        n = cfg.decoder.noise
        self.out_bands = out_bands
        self.noise_bands = n.noise_bands
        self.block = _prod(n.ratios)
        layers: list[nn.Module] = []
        c = in_channels
        for r in n.ratios:
            layers += [Conv1d(c, n.hidden, 2 * r, stride=r, causal=cfg.causal), LeakyReLU(inplace=True)]
            c = n.hidden
        layers.append(Conv1d(c, out_bands * n.noise_bands, 3, causal=cfg.causal))
        self.net = nn.Sequential(*layers)
        bins = self.block // 2 + 1
        fwd, inv = _dft_matrices(self.block)
        self.register_buffer("interp", _interpolation_matrix(n.noise_bands, bins), persistent=False)
        self.register_buffer("dft", fwd, persistent=False)
        self.register_buffer("idft", inv, persistent=False)
        self.table_frames = max(16384 // self.block, 16)
        #: batch item b reads the table from position + b * batch_offset (decorrelated items)
        self.batch_offset = 397
        # the seed is part of the model's definition (the table is not in the state dict)
        gen = torch.Generator().manual_seed(0x5EED)
        white = torch.rand(out_bands, self.table_frames, self.block, generator=gen, dtype=torch.float64)
        table = (white * 2 - 1) @ fwd.double()
        self.register_buffer("table", table.float().contiguous(), persistent=False)
        self.streaming = False
        self.register_buffer("position", torch.zeros(1), persistent=False)

    @torch.jit.ignore
    def set_streaming(self, flag: bool) -> None:
        self.streaming = flag
        self.position = torch.zeros(1, device=self.position.device)

    def _table_noise(self, b: int, frames: int) -> torch.Tensor:
        """(B, bands, frames, 2 * bins) noise spectra from the table, from the current position."""
        start = self.position if self.streaming else torch.zeros_like(self.position)
        period = float(self.table_frames)
        steps = torch.arange(frames, dtype=start.dtype, device=start.device)
        items = torch.arange(b, dtype=start.dtype, device=start.device) * float(self.batch_offset)
        pos = start + items[:, None] + steps[None, :]  # (B, frames), exact integers in float32
        # remainder by floor (ONNX Mod is not in the TensorRT 8.2 tables)
        index = (pos - torch.floor(pos / period) * period).long()
        spec = self.table.index_select(1, index.reshape(-1))  # (bands, B * frames, 2 * bins)
        if self.streaming:
            nxt = start + float(frames)
            self.position = nxt - torch.floor(nxt / period) * period
        return spec.reshape(self.out_bands, b, frames, -1).transpose(0, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        amp = torch.sigmoid(self.net(h) - 5.0)  # start quiet
        frames = amp.shape[-1]
        # (B, bands, noise_bands, Fn) -> (B, bands, Fn, noise_bands) -> bins
        amp = amp.reshape(b, self.out_bands, self.noise_bands, frames).transpose(2, 3)
        amp = torch.matmul(amp, self.interp)
        # scripted files (exports) never draw random numbers: the branch is not even compiled
        if self.training and not torch.jit.is_scripting():
            noise = torch.rand(b, self.out_bands, frames, self.block, dtype=h.dtype, device=h.device) * 2 - 1
            spec = torch.matmul(noise, self.dft)
        else:
            spec = self._table_noise(b, frames).to(h.dtype)
        shaped = torch.matmul(spec * torch.cat([amp, amp], -1), self.idft)
        return shaped.reshape(b, self.out_bands, frames * self.block)


class Decoder(nn.Module):
    """Latent (B, latent, F) -> band frames (B, C*M, F * prod(ratios)).

    v2: conv, per reversed ratio [LeakyReLU, up-sampling halving channels, dilated units], then
    ``tanh(wave) * sigmoid(amplitude)``. v1: the same trunk with v1 residual pairs, then
    ``tanh(wave) * modulated-sigmoid(loudness)``. Both add filtered noise, scaled by ``noise_gain``,
    when it is enabled and the gain is non-zero. The gain is a buffer (so checkpoints and exports carry
    it): 1 from step 0 with ``noise.from_phase1`` (the default: phase 1 trains the branch); otherwise 0
    in phase 1 and faded in to 1 by the trainer after the phase switch.
    """

    def __init__(self, cfg: RaveConfig):
        super().__init__()
        d, causal = cfg.decoder, cfg.causal
        self.kind = d.kind
        self.out_bands = cfg.channels * cfg.pqmf.n_band
        ratios = cfg.encoder.ratios
        c = d.capacity * 2 ** len(ratios)
        layers: list[nn.Module] = [Conv1d(cfg.latent_size, c, 3 if d.kind == "v2" else 7, causal=causal)]
        n = len(ratios)
        for i, r in enumerate(reversed(ratios)):
            layers += [LeakyReLU(inplace=True), Upsample(c, c // 2, r, causal)]
            c //= 2
            if d.kind == "v2":
                for dil in reversed(d.dilations[n - 1 - i]):
                    layers.append(DilatedUnit(c, d.kernel_size, dil, causal))
            else:
                for pair in d.dilations:
                    layers.append(ResidualPair(c, d.kernel_size, pair, causal))
        layers.append(LeakyReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        if d.kind == "v2":
            self.wave = Conv1d(c, 2 * self.out_bands, 7, causal=causal)
            self.loudness = nn.Identity()
        else:
            self.wave = Conv1d(c, self.out_bands, 7, causal=causal)
            self.loudness = Conv1d(c, cfg.channels, 3, causal=causal)
        self.use_noise = d.noise.enabled
        self.noise = NoiseGenerator(c, self.out_bands, cfg) if d.noise.enabled else nn.Identity()
        on = d.noise.enabled and d.noise.from_phase1
        self.register_buffer("noise_gain", torch.full((), 1.0 if on else 0.0))
        self.channels = cfg.channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z)
        if self.kind == "v2":
            wave, amp = self.wave(h).chunk(2, dim=1)
            y = torch.tanh(wave) * torch.sigmoid(amp)
        else:
            wave = self.wave(h)
            loud = self.loudness(h)  # (B, C, F): one loudness per audio channel, shared by its bands
            gate = 2 * torch.sigmoid(loud) ** 2.3 + 1e-7
            b, _, f = wave.shape
            y = (torch.tanh(wave).reshape(b, self.channels, -1, f) * gate.unsqueeze(2)).reshape(b, -1, f)
        if self.use_noise and float(self.noise_gain) > 0:
            y = y + self.noise_gain * self.noise(h)
        return y


def trunk_convolutions(model: nn.Module) -> list[Conv1d]:
    """The trunk convolutions of a model's encoder and decoder: the direct layers of their ``net``
    (input, strided, last; the decoder's input and up-sampling ones), not the residual units' inner
    convolutions nor the decoder's output layers (``config.init.trunk_gain`` applies to these)."""
    out: list[Conv1d] = []
    for seq in (model.encoder.net, model.decoder.net):
        for layer in seq:
            conv = layer.conv if isinstance(layer, Upsample) else layer
            if isinstance(conv, Conv1d):
                out.append(conv)
    return out


class Rave(nn.Module):
    """The RAVE model. Build with ``Rave(config)``; see the module docstring for shapes."""

    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: RaveConfig):
        super().__init__()
        validate(config)
        self.config = config
        self.channels = config.channels
        self.latent_size = config.latent_size
        self.n_band = config.pqmf.n_band
        self.compression_ratio = config.compression_ratio
        self.sample_rate = config.sample_rate
        self.causal = config.causal
        self.pqmf = PQMF(
            config.pqmf.n_band, config.pqmf.taps_per_band, config.pqmf.beta, causal=config.causal
        )
        self.encoder = EncoderV2(config) if config.encoder.kind == "v2" else EncoderV1(config)
        self.decoder = Decoder(config)
        n = config.latent_size
        # latent analysis (PCA of the posterior means); identity until fit_latent_pca
        self.register_buffer("latent_mean", torch.zeros(n))
        self.register_buffer("latent_components", torch.eye(n))
        self.register_buffer("latent_variance", torch.ones(n))
        self.register_buffer("latent_dims", torch.tensor(n, dtype=torch.long))
        # a plain int mirror of the buffer, so that encode has static shapes (torch.export, TorchScript)
        self.n_latent = n
        self.register_load_state_dict_post_hook(_sync_latent_dims)
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """Apply ``config.init`` to the fresh weights (no random draws: the seeded init stays as is)."""
        init = self.config.init
        if init.trunk_gain > 0:
            for conv in trunk_convolutions(self):
                conv.gain.fill_(init.trunk_gain)
        if init.zero_bias:
            for m in self.modules():
                if isinstance(m, Conv1d):
                    m.bias.zero_()

    # --- latent analysis ------------------------------------------------------------------------
    @torch.jit.ignore
    def fit_latent_pca(self, means: torch.Tensor, fidelity: float = 0.95) -> int:
        """PCA of posterior means (N, latent); keep the dims that explain ``fidelity`` of the variance."""
        means = means.double()
        mu = means.mean(0)
        cov = (means - mu).T @ (means - mu) / max(means.shape[0] - 1, 1)
        var, vecs = torch.linalg.eigh(cov)
        order = torch.argsort(var, descending=True)
        self.latent_mean.copy_(mu.float())
        self.latent_components.copy_(vecs[:, order].T.float())
        self.latent_variance.copy_(var[order].clamp_min(0).float())
        return self.set_fidelity(fidelity)

    @torch.jit.ignore
    def fidelity_table(self) -> torch.Tensor:
        """Cumulative explained variance ratio per number of kept dims (latent,)."""
        v = self.latent_variance.double()
        return (v.cumsum(0) / v.sum().clamp_min(1e-12)).float()

    @torch.jit.ignore
    def set_fidelity(self, fidelity: float) -> int:
        """Keep the fewest dims whose explained variance reaches ``fidelity`` (0 < f <= 1); return it."""
        if not 0 < fidelity <= 1:
            raise ValueError(f"fidelity must be in (0, 1], got {fidelity}")
        table = self.fidelity_table()
        dims = int((table < fidelity - 1e-6).sum().item()) + 1
        self.latent_dims.fill_(min(dims, self.latent_size))
        self.n_latent = int(self.latent_dims)
        return self.n_latent

    # --- streaming ------------------------------------------------------------------------------
    @torch.jit.ignore
    def set_streaming(self, flag: bool) -> None:
        """Streaming on (fresh zero state; needs a causal config) or off."""
        if flag and not self.causal:
            raise ValueError("this model is not causal (causal = false): it cannot stream")
        set_streaming(self, flag)

    @torch.jit.ignore
    def fuse(self) -> None:
        """Fold weight normalisation for inference (irreversible on this instance)."""
        fuse_weight_norm(self)

    @torch.jit.ignore
    def set_precision(self, precision: str) -> None:
        """Inference precision of the convolution weights: ``"fp32"`` (default) or ``"bf16"``.

        ``"bf16"`` folds weight normalisation (as :meth:`fuse`) and stores every convolution weight in
        bfloat16: streaming reads half the bytes per call (the streaming cost is reading the weights).
        Activations, sums, caches and the PQMF stay float32. Irreversible on this instance; the output
        is within about 1e-2 relative (RMS) of float32 (tested: > 35 dB SNR on real audio).
        """
        if precision == "fp32":
            if any(isinstance(m, Conv1d) and m.weight.dtype != torch.float32 for m in self.modules()):
                raise ValueError("this instance already holds bfloat16 weights: rebuild it for fp32")
            return
        if precision != "bf16":
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        for m in self.modules():
            if isinstance(m, Conv1d):
                m.to_bfloat16()

    @torch.jit.ignore
    def in_blocks(self, method: str, x: torch.Tensor, block: int) -> torch.Tensor:
        """``encode``, ``decode`` or ``forward`` of ``x`` computed ``block`` by ``block`` through the cached
        (streaming) convolutions: the same result as one call up to float rounding (the streaming
        contract), in memory bounded by the block instead of the input's length. ``block`` counts samples
        (latent frames for ``decode``): a multiple of the compression ratio for ``encode``/``forward``.

        An input no longer than a block, or a non-causal model (it cannot stream), takes one call. The
        streaming state starts fresh and the model is left offline.
        """
        fn = {"encode": self.encode, "decode": self.decode, "forward": self.forward}[method]
        unit = 1 if method == "decode" else self.compression_ratio
        if block <= 0 or block % unit:
            raise ValueError(f"block must be a positive multiple of {unit}, got {block}")
        if x.shape[-1] <= block or not self.causal:
            return fn(x)
        self.set_streaming(True)
        for m in self.modules():
            if isinstance(m, Conv1d):
                m.gemm = False  # blocks of thousands of frames: the convolution library (and Winograd)
        try:
            return torch.cat([fn(x[..., i : i + block]) for i in range(0, x.shape[-1], block)], -1)
        finally:
            self.set_streaming(False)

    @property
    def latency(self) -> int:
        """Algorithmic latency of streaming ``forward`` beyond the block, in samples (causal only)."""
        return self.pqmf.delay if self.causal else -1

    # --- the model ------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        rest = x.shape[-1] % self.compression_ratio
        if rest != 0:
            x = F.pad(x, (0, self.compression_ratio - rest))
        return x

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio (B, C, T) -> posterior mean and standard deviation, each (B, latent, T / R)."""
        h = self.encoder(self.pqmf(self._pad(x)))
        mean, scale = h.chunk(2, dim=1)
        return mean, F.softplus(scale) + 1e-4

    def decode_bands(self, z: torch.Tensor) -> torch.Tensor:
        """Full latent (B, latent, F) -> PQMF bands (B, C*M, F * R / M)."""
        return self.decoder(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Audio (B, C, T) -> latent (B, latent_dims, ceil(T / R)), in PCA coordinates."""
        mean, _ = self.posterior(x)
        # plain matmuls (ONNX MatMul: Einsum is not in the TensorRT tables)
        z = torch.matmul(self.latent_components, mean - self.latent_mean[:, None])
        return z[:, : self.n_latent]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, D, F), D <= latent_size in PCA coordinates -> audio (B, C, F * R)."""
        d = z.shape[1]
        if d > self.latent_size:
            raise ValueError("more latent channels than latent_size")
        if d < self.latent_size:
            z = F.pad(z, (0, 0, 0, self.latent_size - d))
        z = torch.matmul(self.latent_components.t(), z) + self.latent_mean[:, None]
        return self.pqmf.inverse(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, C, T) -> (B, C, T)."""
        return self.decode(self.encode(x))[..., : x.shape[-1]]


def _sync_latent_dims(module: nn.Module, incompatible_keys: object) -> None:
    module.n_latent = int(module.latent_dims)


def kl_divergence(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) || N(0, 1)), summed over latent channels, averaged over batch and frames."""
    var = std * std
    return 0.5 * (mean * mean + var - torch.log(var) - 1).sum(1).mean()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
