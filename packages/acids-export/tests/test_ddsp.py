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


@pytest.mark.parametrize("command", ["onnx", "tensorrt"])
def test_ddsp_onnx_streaming_state_is_explicit(ddsp_ckpt, tmp_path, audio, command):
    profile = "rpi-bookworm" if command == "onnx" else "jetson-jp4"
    args = [command, str(ddsp_ckpt), "--profile", profile, "--streaming", "-o", str(tmp_path / "d.onnx")]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--blocks", "3", "--audio", audio]))
    assert rec["profile"] == profile and len(rec["io"]["inputs"]) > 2  # phase, GRU, filter tails...
    fig = rec["figures"]["methods"]["forward"]
    assert fig["max_abs_error"] < 1e-4 and fig["stream_vs_offline"] < 1e-4
