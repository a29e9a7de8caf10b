import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from acids_core.records import make_record
from acids_export.cli import main_group

SCRIPT = Path(sys.executable).parent / "acids-export"


def _records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_list_shows_installed_exportables(tiny_plugin):
    run = subprocess.run([str(SCRIPT), "list"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = {r["name"]: r for r in _records(run.stdout)}
    assert rows["tiny"]["kind"] == "exportable" and rows["tiny"]["target"] == "acids_export_tiny:exportable"


def test_pipe_onnx_into_check(tiny_ckpt, tmp_path, audio):
    rec = json.dumps(make_record("checkpoint", path=str(tiny_ckpt), format="acids-tiny"))
    cmd = (
        f"set -o pipefail; echo '{rec}' | '{SCRIPT}' onnx --profile rpi-bookworm --streaming --blocks 4 "
        f"--audio '{audio}' | '{SCRIPT}' check - --blocks 4 --audio '{audio}'"
    )
    run = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (art,) = _records(run.stdout)
    assert art["kind"] == "artifact" and art["format"] == "onnx" and art["profile"] == "rpi-bookworm"
    assert Path(art["path"]).is_file() and art["path"].endswith("tiny.rpi-bookworm.streaming.onnx")
    assert art["figures"]["methods"]["forward"]["stream_vs_offline"] < 1e-4
    assert art["io"]["inputs"]["state_in.1"] == [1, 1, 8]


def test_bad_inputs_give_one_line_and_65_or_66(tiny_plugin, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main_group, ["torchscript", str(tmp_path / "absent.ckpt")])
    assert res.exit_code == 66
    (tmp_path / "junk.ckpt").write_text("junk")
    res = runner.invoke(main_group, ["onnx", str(tmp_path / "junk.ckpt"), "--profile", "desktop"])
    assert res.exit_code == 65 and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main_group, ["check", str(tmp_path / "junk.ckpt")])
    assert res.exit_code == 65 and "neither a TorchScript archive nor an ONNX model" in res.output
    res = runner.invoke(main_group, ["check", "-"], input='{"kind":"artifact","version":1}\n')
    assert res.exit_code == 65
    res = runner.invoke(main_group, ["onnx", "-", "--profile", "desktop"], input="not json\n")
    assert res.exit_code == 65


def test_real_rave_checkpoint(tmp_path, audio):
    pytest.importorskip("acids_rave")
    import torch

    from acids_rave import checkpoint
    from acids_rave.config import PRESETS
    from acids_rave.model import Rave

    torch.manual_seed(0)
    ckpt = checkpoint.save(tmp_path / "rave.ckpt", Rave(PRESETS["tiny"]()).eval())
    runner = CliRunner()
    common = ["--streaming", "--blocks", "3", "--audio", audio]
    res = runner.invoke(main_group, ["torchscript", str(ckpt), "-o", str(tmp_path / "r.ts"), *common])
    assert res.exit_code == 0, res.output
    (ts,) = [r for r in _records(res.stdout) if r.get("kind") == "artifact"]
    assert ts["io"]["methods"]["encode"] == [1, 1, 4, 64]
    assert max(f["max_abs_error"] for f in ts["figures"]["methods"].values()) < 1e-5
    res = runner.invoke(main_group, ["onnx", str(ckpt), "--profile", "rpi-bookworm", *common])
    assert res.exit_code == 0, res.output
    (ox,) = [r for r in _records(res.stdout) if r.get("kind") == "artifact"]
    assert ox["figures"]["methods"]["forward"]["stream_vs_offline"] < 1e-4


def test_real_rave_prior_checkpoint(tmp_path, audio):
    """A prior checkpoint (acids-rave train-prior) exports as its RAVE model plus the nn~ ``prior``
    method and ``seed`` attribute, found through the ``rave-prior`` entry point; ONNX refuses it."""
    pytest.importorskip("acids_rave")
    from rave_models import rave_prior_checkpoint

    ckpt = rave_prior_checkpoint(tmp_path)
    runner = CliRunner()
    common = ["--streaming", "--blocks", "3", "--audio", audio]
    res = runner.invoke(main_group, ["torchscript", str(ckpt), "-o", str(tmp_path / "p.ts"), *common])
    assert res.exit_code == 0, res.output
    (ts,) = [r for r in _records(res.stdout) if r.get("kind") == "artifact"]
    assert ts["io"]["methods"]["prior"] == [1, 64, 4, 64] and ts["io"]["attributes"] == ["seed"]
    fig = ts["figures"]["methods"]["prior"]
    assert ts["figures"]["inputs"]["prior"] == "example_inputs"
    assert fig["max_abs_error"] == 0.0 and fig["stream_vs_offline"] == 0.0  # hashed noise: exact
    res = runner.invoke(main_group, ["onnx", str(ckpt), "--profile", "desktop", "--method", "prior", *common])
    assert res.exit_code == 65 and "prior does not export to ONNX" in res.output
