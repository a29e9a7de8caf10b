import dataclasses

import pytest
import torch

from acids_core import config as core_config
from acids_rave.config import PRESETS, RaveConfig, load_config
from acids_rave.discriminator import Discriminator
from acids_rave.model import Rave


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_runs(name):
    cfg = PRESETS[name]()
    assert cfg.sample_rate == (48_000 if name.endswith("-48k") else 44_100)
    torch.manual_seed(0)
    model = Rave(cfg).eval()
    r = cfg.compression_ratio
    x = 0.1 * torch.randn(1, cfg.channels, r)
    with torch.no_grad():
        z = model.encode(x)
        y = model(x)
    assert z.shape == (1, cfg.latent_size, 1)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if cfg.decoder.noise.enabled:  # the noise branch is on from step 0 (trained in phase 1)
        assert float(model.decoder.noise_gain) == 1.0
        model.decoder.noise_gain.fill_(0.0)
        with torch.no_grad():
            assert not torch.equal(model(x), y)


@pytest.mark.parametrize("name", ["v2", "v1", "small"])
def test_parameter_counts_match_upstream(name):
    # upstream (reference/rave.md §1.2): encoder / decoder / discriminator, in millions
    expected = {"v2": (16.06, 15.48, 27.13), "v1": (4.83, None, 7.75), "small": (3.95, 3.82, 6.79)}[name]
    cfg = PRESETS[name]()
    model = Rave(cfg)
    counts = (
        sum(p.numel() for p in model.encoder.parameters()) / 1e6,
        sum(p.numel() for p in model.decoder.parameters()) / 1e6,
        sum(p.numel() for p in Discriminator(cfg.discriminator).parameters()) / 1e6,
    )
    for got, want in zip(counts, expected, strict=True):
        if want is not None:
            assert abs(got - want) / want < 0.02, (got, want)


def test_compression_ratios():
    assert PRESETS["v2"]().compression_ratio == 2048
    assert PRESETS["v1"]().compression_ratio == 2048
    assert PRESETS["small"]().compression_ratio == 512
    assert PRESETS["tiny"]().compression_ratio == 64


def test_load_config_presets_files_and_overrides(tmp_path):
    assert load_config() == PRESETS["v2"]()
    cfg = load_config("small", ["sample_rate=48000", "encoder.capacity=8"])
    assert cfg.sample_rate == 48000 and cfg.encoder.capacity == 8
    f = tmp_path / "run.toml"
    f.write_text('preset = "tiny"\nlatent_size = 8\n[train]\nbatch = 2\n')
    cfg = load_config(str(f))
    assert cfg.latent_size == 8 and cfg.train.batch == 2 and cfg.encoder.capacity == 4
    with pytest.raises(core_config.ConfigError):
        load_config("v2", ["encoder.nope=1"])
    with pytest.raises(ValueError, match="multiple of the compression ratio"):
        load_config("v2", ["train.n_signal=1000"])


def test_config_round_trips_through_dict():
    for make in PRESETS.values():
        cfg = make()
        assert core_config.from_dict(RaveConfig, core_config.to_dict(cfg)) == cfg
    assert dataclasses.is_dataclass(PRESETS["v2"]())
