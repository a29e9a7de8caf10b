"""The DDSP model: f0 + loudness frames → decoder → harmonic + noise synthesis → reverb → audio."""

import torch
from torch import nn

from acids_ddsp.config import DDSPConfig
from acids_ddsp.dsp import exp_sigmoid, hz_to_midi
from acids_ddsp.synths import FilteredNoise, HarmonicSynth, Reverb


def mlp(in_size: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` × (Linear → LayerNorm → LeakyReLU), as the DDSP decoders' FC stacks."""
    mods: list[nn.Module] = []
    size = in_size
    for _ in range(layers):
        mods += [nn.Linear(size, hidden), nn.LayerNorm(hidden), nn.LeakyReLU()]
        size = hidden
    return nn.Sequential(*mods)


class Decoder(nn.Module):
    """Controls from f0 and loudness: one input MLP *each* (not shared), a GRU, an output MLP.

    The output MLP sees the two input embeddings and the GRU output (magenta's RnnFcDecoder), and one linear
    head gives 1 amplitude + K harmonic + n_bands noise logits per frame.
    """

    streaming: bool

    def __init__(self, cfg: DDSPConfig) -> None:
        super().__init__()
        d, s = cfg.decoder, cfg.synth
        self.f0_scale = d.f0_scale
        self.db_range = d.db_range
        self.f0_mlp = mlp(1, d.hidden, d.mlp_layers)
        self.loudness_mlp = mlp(1, d.hidden, d.mlp_layers)
        self.gru = nn.GRU(2 * d.hidden, d.gru, batch_first=True)
        self.out_mlp = mlp(2 * d.hidden + d.gru, d.hidden, d.mlp_layers)
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

    def forward(self, f0: torch.Tensor, loudness: torch.Tensor) -> torch.Tensor:
        """Args: f0 (B, F) Hz, loudness (B, F) dB. Returns: (B, F, 1 + K + n_bands) logits."""
        hf = self.f0_mlp(self.scale_f0(f0).unsqueeze(-1))
        hl = self.loudness_mlp(self.scale_loudness(loudness).unsqueeze(-1))
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
    """

    streaming: bool

    def __init__(self, cfg: DDSPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop = cfg.hop
        self.n_harmonics = cfg.synth.n_harmonics
        self.noise_bias = cfg.synth.noise_bias
        self.decoder = Decoder(cfg)
        self.harmonic = HarmonicSynth(cfg.sample_rate, cfg.hop, cfg.synth.n_harmonics)
        self.noise = FilteredNoise(cfg.hop, cfg.synth.n_noise_bands, cfg.synth.noise_seed)
        self.use_reverb = cfg.synth.reverb
        self.reverb = (
            Reverb(cfg.sample_rate, cfg.reverb_length, cfg.hop) if cfg.synth.reverb else nn.Identity()
        )
        self.streaming = False

    def set_streaming(self, flag: bool) -> None:
        """Switch streaming on or off; either way the state starts fresh."""
        self.streaming = flag
        for m in (self.decoder, self.harmonic, self.noise, self.reverb):
            if hasattr(m, "streaming"):
                m.streaming = flag
            if hasattr(m, "reset"):
                m.reset()

    @torch.jit.export
    def controls(
        self, f0: torch.Tensor, loudness: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Controls of (B, F) frames: amplitude (B, F), harmonics (B, F, K), noise (B, F, n_bands)."""
        logits = self.decoder(f0, loudness)
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

    def forward(self, f0: torch.Tensor, loudness: torch.Tensor) -> torch.Tensor:
        """Args: f0 (B, F) or (B, 1, F) in Hz; loudness the same shape in dB. Returns: (B, 1, F * hop)."""
        if f0.dim() == 3:
            f0 = f0.squeeze(1)
        if loudness.dim() == 3:
            loudness = loudness.squeeze(1)
        amplitude, distribution, noise = self.controls(f0, loudness)
        return self.synthesize(f0, amplitude, distribution, noise).unsqueeze(1)


def build(cfg: DDSPConfig) -> DDSP:
    return DDSP(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
