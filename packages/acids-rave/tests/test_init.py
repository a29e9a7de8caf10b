"""The autoencoder's initialisation (``config.init``): at step 0 the decoder must hear its input."""

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from acids_core.checkpoint import load_checkpoint, save_checkpoint
from acids_rave import checkpoint
from acids_rave.blocks import Conv1d
from acids_rave.cli import main_group
from acids_rave.config import PRESETS, InitConfig, load_config
from acids_rave.model import Rave, trunk_convolutions

LEGACY = InitConfig(zero_bias=False, trunk_gain=0.0)


def _input_dependence(model: Rave, a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS of the difference of the decoder's outputs for two recordings, relative to the first's RMS."""
    with torch.no_grad():
        ya = model.decoder(model.posterior(a)[0])
        yb = model.decoder(model.posterior(b)[0])
    return float((ya - yb).pow(2).mean().sqrt() / ya.pow(2).mean().sqrt())


@pytest.mark.parametrize("name", ["small", "v2"])
def test_untrained_decoder_depends_on_its_input(name, real_audio):
    """PyTorch's default init: two different recordings (violin, flute) give the same decoder output to
    1e-3 of its level (the random biases' constant part dominates). The presets' ``init`` (zero biases;
    `small`: trunk gain 1.39 too) makes the outputs differ by more than their level (measured 1.57 `small`,
    1.73 `v2`)."""
    violin, _ = real_audio(3.0, name="violin")
    flute, _ = real_audio(3.0, name="flute")
    cfg = PRESETS[name]()
    torch.manual_seed(0)
    legacy = Rave(dataclasses.replace(cfg, init=LEGACY)).eval()
    torch.manual_seed(0)
    model = Rave(cfg).eval()
    assert _input_dependence(legacy, violin, flute) < 1e-3
    assert _input_dependence(model, violin, flute) > 0.3


@pytest.mark.parametrize("name", ["small", "v2"])
def test_init_touches_trunk_gains_and_all_biases_only(name):
    cfg = PRESETS[name]()
    gain = {"small": 1.39, "v2": 0.0}[name]
    assert cfg.init.zero_bias and cfg.init.trunk_gain == gain
    torch.manual_seed(0)
    legacy = Rave(dataclasses.replace(cfg, init=LEGACY))
    torch.manual_seed(0)
    model = Rave(cfg)
    trunk = {id(c) for c in trunk_convolutions(model)}
    # encoder: input + 4 strided + last; decoder: input + 4 up-sampling (both presets have 4 ratios)
    assert len(trunk) == 11
    for (layer, new), old in zip(model.named_modules(), legacy.modules(), strict=True):
        if not isinstance(new, Conv1d):
            continue
        torch.testing.assert_close(new.weight, old.weight, msg=layer)  # same seeded draw
        assert float(new.bias.detach().abs().max()) == 0.0, layer
        if id(new) in trunk and gain:
            torch.testing.assert_close(new.gain, torch.full_like(new.gain, gain), msg=layer)
        else:
            torch.testing.assert_close(new.gain, old.gain, msg=layer)
    with pytest.raises(ValueError, match="trunk_gain"):
        load_config("tiny", ["init.trunk_gain=-1"])


def test_checkpoint_from_before_init_reports_the_default_init(tiny, tmp_path):
    saved = Rave(tiny)
    path = checkpoint.save(tmp_path / "m.ckpt", saved)
    assert checkpoint.load(path)[0].config.init == InitConfig()
    env = load_checkpoint(path)
    del env["config"]["init"]
    save_checkpoint(tmp_path / "old.ckpt", env)
    model, _ = checkpoint.load(tmp_path / "old.ckpt")
    assert model.config.init == LEGACY
    # the weights are the checkpoint's (built with the legacy init, then loaded over)
    torch.testing.assert_close(model.state_dict(), saved.state_dict())
    # and `info` says how each was initialised
    runner = CliRunner()
    new = runner.invoke(main_group, ["info", str(path)])
    old = runner.invoke(main_group, ["info", str(tmp_path / "old.ckpt")])
    assert new.exit_code == old.exit_code == 0, (new.output, old.output)
    assert "initialisation    zero biases, default gains\n" in new.output
    assert "initialisation    random biases, default gains (PyTorch's default)" in old.output
