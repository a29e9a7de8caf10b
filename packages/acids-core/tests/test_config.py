from dataclasses import dataclass, field
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from acids_core import config
from acids_core.cli import AcidsCommand
from acids_core.config import ConfigError


@dataclass(frozen=True)
class Encoder:
    channels: int = 64
    ratios: tuple[int, ...] = (4, 4, 2)
    activation: Literal["relu", "elu"] = "elu"


@dataclass(frozen=True)
class Model:
    sample_rate: int = 44100
    beta: float = 0.1
    causal: bool = False
    name: str = "x"
    dropout: float | None = None
    encoder: Encoder = field(default_factory=Encoder)


PRESETS = {"small": Model(sample_rate=16000, encoder=Encoder(channels=16))}


def test_defaults_preset_file_then_overrides_in_order(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "small"\nbeta = 0.5\n[encoder]\nratios = [2, 2]\n')
    cfg = config.load(
        Model, toml, ["encoder.channels=8", "beta=1e-3", "causal=true", "dropout=none"], PRESETS
    )
    assert cfg == Model(sample_rate=16000, beta=1e-3, causal=True, encoder=Encoder(channels=8, ratios=(2, 2)))
    assert config.load(Model, "small", presets=PRESETS).encoder.channels == 16
    assert config.load(Model).sample_rate == 44100


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoder.chanels=3", "unknown config key 'encoder.chanels'"),
        ("sample_rate=fast", "config key 'sample_rate': expected an integer"),
        ("causal=maybe", "config key 'causal': expected true or false"),
        ("encoder.activation=tanh", "config key 'encoder.activation': expected one of 'relu', 'elu'"),
        ("encoder.ratios=4,x", "config key 'encoder.ratios[1]': expected an integer"),
        ("beta", "--set expects KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        config.load(Model, None, [override])
    assert message in str(e.value)
    assert e.value.code == 2


def test_bad_file_values_are_typed_too(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text("sample_rate = 44100.5\n")
    with pytest.raises(ConfigError, match="'sample_rate': expected an integer"):
        config.load(Model, toml)
    with pytest.raises(ConfigError, match="unknown config preset 'huge'"):
        config.load(Model, "huge", presets=PRESETS)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(Model, tmp_path / "missing.toml")


def test_round_trip_through_dict_and_toml(tmp_path):
    cfg = config.load(Model, "small", ["encoder.ratios=8,2", "dropout=0.25"], PRESETS)
    assert config.from_dict(Model, config.to_dict(cfg)) == cfg
    p = tmp_path / "dump.toml"
    p.write_text(config.to_toml(cfg))
    assert config.load(Model, p) == cfg


def test_cli_usage_error_is_exit_2_and_one_line():
    @click.command(cls=AcidsCommand)
    @config.config_options
    def cmd(config, overrides):
        cfg = config_load(config, overrides)
        click.echo(cfg.encoder.channels)

    def config_load(source, overrides):
        return config.load(Model, source, overrides, PRESETS)

    ok = CliRunner().invoke(cmd, ["--config", "small", "--set", "encoder.channels=3"])
    assert ok.exit_code == 0 and ok.stdout.strip() == "3"
    bad = CliRunner().invoke(cmd, ["--set", "encoder.nope=1"])
    assert bad.exit_code == 2
    assert bad.stdout == ""
    assert "unknown config key 'encoder.nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
