"""The real acids-ddsp exportable (entry point ``ddsp``): TorchScript, ONNX and the TensorRT variant."""

import json

import pytest
import torch
from click.testing import CliRunner

from acids_export.cli import main_group

pytest.importorskip("acids_ddsp")


@pytest.fixture(scope="module")
def ddsp_ckpt(tmp_path_factory):
    from acids_ddsp import checkpoint
    from acids_ddsp.config import preset
    from acids_ddsp.model import DDSP

    torch.manual_seed(0)
    return checkpoint.save(DDSP(preset("tiny")).eval(), tmp_path_factory.mktemp("ddsp") / "ddsp.ckpt")


def _artifact(res):
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return rec


def test_ddsp_torchscript_streaming(ddsp_ckpt, tmp_path, audio):
    args = ["torchscript", str(ddsp_ckpt), "--streaming", "-o", str(tmp_path / "d.ts"), "--blocks", "3"]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--audio", audio]))
    in_ch, _, out_ch, out_ratio = rec["io"]["methods"]["forward"]  # f0 + loudness in, audio out
    assert (in_ch, out_ch, out_ratio) == (2, 1, 1)
    fig = rec["figures"]["methods"]["forward"]
    assert fig["max_abs_error"] < 1e-5 and fig["stream_vs_offline"] < 1e-4
    # realistic controls: f0 and loudness of the real audio at the model's rate and hop, not noise; made
    # by acids-ddsp's example_inputs hook where it has one, else by acids-export from the channel labels
    assert rec["figures"]["inputs"]["forward"] in (
        "example_inputs",
        "features f0_hz,loudness_db (acids_data.features, hop 64)",
    )
    assert fig["spectral_distance_db"] < 0.01 and fig["rtf_timed_calls"] >= 8


def test_ddsp_controls_are_features_of_the_audio(ddsp_ckpt, audio):
    from acids_data.features import compute_features
    from acids_export import registry
    from acids_export.inputs import load_audio, method_inputs

    loaded = registry.load(ddsp_ckpt, streaming=False)
    sr, hop = loaded.spec.sample_rate, loaded.spec.method("forward").in_ratio
    samples, _ = load_audio(audio, 4 * 4096, sample_rate=sr)
    feats = compute_features(samples[None], sr, hop, ["loudness", "f0"])
    hooked = callable(getattr(loaded.module, "example_inputs", None))
    routes = [loaded.module, None] if hooked else [loaded.module]  # None: acids-export's own fallback
    for module in routes:
        inputs, sources = method_inputs(loaded.spec, samples, module)
        assert sources["forward"] == (
            "example_inputs"
            if module is not None and hooked
            else "features f0_hz,loudness_db (acids_data.features, hop 64)"
        )
        torch.testing.assert_close(inputs["forward"][0, 0], torch.from_numpy(feats["f0"]))
        torch.testing.assert_close(inputs["forward"][0, 1], torch.from_numpy(feats["loudness"]))
        assert 100 < float(inputs["forward"][0, 0].median()) < 1000  # an alto sax phrase, in Hz


@pytest.mark.parametrize("command", ["onnx", "tensorrt"])
def test_ddsp_onnx_streaming_state_is_explicit(ddsp_ckpt, tmp_path, audio, command):
    profile = "rpi-bookworm" if command == "onnx" else "jetson-jp4"
    args = [command, str(ddsp_ckpt), "--profile", profile, "--streaming", "-o", str(tmp_path / "d.onnx")]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--blocks", "3", "--audio", audio]))
    assert rec["profile"] == profile and len(rec["io"]["inputs"]) > 2  # phase, GRU, filter tails...
    fig = rec["figures"]["methods"]["forward"]
    assert fig["max_abs_error"] < 1e-4 and fig["stream_vs_offline"] < 1e-4


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_ddsp_torchscript_at_a_lower_precision(ddsp_ckpt, tmp_path, audio, precision):
    """--precision reaches the family's exportable; check compares with eager at the same precision."""
    out = tmp_path / f"d.{precision}.ts"
    args = ["torchscript", str(ddsp_ckpt), "--streaming", "--precision", precision, "-o", str(out)]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--blocks", "3", "--audio", audio]))
    assert rec["io"]["precision"] == precision
    fig = rec["figures"]["methods"]["forward"]
    # eager at the same precision: the file is that model, not an fp32 one with quantisation noise
    assert fig["max_abs_error"] < 1e-4 and fig["stream_vs_offline"] < 1e-4
    res = CliRunner().invoke(main_group, ["check", str(out), "--audio", audio, "--blocks", "3"])
    assert _artifact(res)["figures"]["methods"]["forward"]["max_abs_error"] < 1e-4


def test_precision_the_family_lacks_is_one_line(tmp_path, tiny_plugin, tiny_ckpt):
    res = CliRunner().invoke(main_group, ["torchscript", str(tiny_ckpt), "--precision", "int8"])
    assert res.exit_code == 2 and "has no precision option" in res.output
    assert "Traceback" not in res.output and not list(tmp_path.glob("*.ts"))
