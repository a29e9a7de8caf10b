import pytest
import torch

from acids_export import registry
from acids_export.torch_export import export_program, load


def test_torch_export_route_with_explicit_state(tiny_ckpt, tmp_path):
    for streaming in (False, True):
        out = tmp_path / f"decode-{streaming}.pt2"
        loaded = registry.load(tiny_ckpt, streaming=streaming)
        info = export_program(loaded, out, method="decode", buffer=2048)
        assert info["dynamic_time"] and len(info["state"]) == (1 if streaming else 0)
        program = load(out)
        z = torch.randn(1, 4, 512)
        offline = registry.load(tiny_ckpt, streaming=False).module
        with torch.no_grad():
            ref = offline.decode(z)
            if not streaming:
                torch.testing.assert_close(program(z), ref)
                continue
            state, outs = [torch.zeros(s["shape"]) for s in info["state"]], []
            for block in z.split(128, dim=-1):
                y, *state = program(block, *state)
                outs.append(y)
        torch.testing.assert_close(torch.cat(outs, -1), ref, atol=1e-5, rtol=1e-5)


def test_cli_flag_writes_a_checked_pt2(tiny_ckpt, tmp_path, audio):
    import json

    from click.testing import CliRunner

    from acids_export.cli import main_group

    out = tmp_path / "dec.pt2"
    args = [
        "torchscript",
        str(tiny_ckpt),
        "--torch-export",
        "--streaming",
        "--method",
        "decode",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(main_group, [*args, "--blocks", "3", "--audio", audio, "--buffer", "2048"])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert rec["format"] == "torch.export" and rec["io"]["method"] == "decode" and out.is_file()
    fig = rec["figures"]["methods"]["decode"]
    assert fig["max_abs_error"] < 1e-5 and fig["stream_vs_offline"] < 1e-4
    res = CliRunner().invoke(main_group, ["check", str(out), "--blocks", "2", "--audio", audio])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main_group, ["torchscript", str(tiny_ckpt), "--method", "decode"])
    assert res.exit_code == 2 and "--torch-export" in res.output


def _rave_with_noise(tmp_path, preset="tiny"):
    """A RAVE checkpoint whose decoder has its noise branch on (``small`` has it; ``tiny`` gets one)."""
    pytest.importorskip("acids_rave")
    import dataclasses

    from acids_rave import checkpoint
    from acids_rave.config import PRESETS, NoiseConfig
    from acids_rave.model import Rave

    cfg = PRESETS[preset]()
    if preset == "tiny":
        noise = NoiseConfig(enabled=True, hidden=8, ratios=(2, 2), noise_bands=4)
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, noise=noise))
    torch.manual_seed(0)
    model = Rave(cfg).eval()
    model.decoder.noise_gain.fill_(1.0)  # a phase-2 model: the branch is taken
    return checkpoint.save(tmp_path / f"rave-{preset}.ckpt", model)


def test_rave_noise_branch_guard_is_folded(tmp_path, monkeypatch):
    """``if float(self.noise_gain) > 0`` (acids_rave.model.Decoder) on a lifted buffer is the guard."""
    from acids_core.errors import DataError
    from acids_export import torch_export

    ckpt = _rave_with_noise(tmp_path)
    loaded = registry.load(ckpt, streaming=True)
    before = dict(loaded.module.named_buffers())
    info = export_program(loaded, tmp_path / "dec.pt2", method="decode", buffer=2048)
    assert info["dynamic_time"] and info["state"]
    after = dict(loaded.module.named_buffers())  # the module is left as it was
    assert (
        after.keys() == before.keys()
        and after["model.decoder.noise_gain"] is before["model.decoder.noise_gain"]
    )
    monkeypatch.setattr(torch_export, "_fold_scalar_buffers", lambda module, state: [])
    with pytest.raises(DataError, match="data-dependent"):
        export_program(registry.load(ckpt, streaming=True), tmp_path / "x.pt2", method="decode", buffer=2048)


@pytest.mark.slow
def test_rave_small_torch_export_passes_check(tmp_path, audio):
    import json

    from click.testing import CliRunner

    from acids_export.cli import main_group

    ckpt = _rave_with_noise(tmp_path, "small")
    args = ["torchscript", str(ckpt), "--torch-export", "--streaming", "-o", str(tmp_path / "small.pt2")]
    res = CliRunner().invoke(main_group, [*args, "--buffer", "2048", "--blocks", "4", "--audio", audio])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    fig = rec["figures"]["methods"]["forward"]
    assert rec["io"]["dynamic_time"] and fig["max_abs_error"] < 1e-4 and fig["stream_vs_offline"] < 1e-4
