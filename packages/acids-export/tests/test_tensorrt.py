"""`acids-export tensorrt`: the Jetson ONNX variant, references, and a recipe acids-deploy can run."""

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from acids_export import tensorrt as atrt
from acids_export.cli import main_group


def _artifact(res):
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return rec


@pytest.mark.parametrize("profile", ["jetson-jp4", "jetson-jp6"])
def test_static_streaming_variant_with_references(tiny_ckpt, tmp_path, audio, profile):
    out = tmp_path / "tiny.onnx"
    args = ["tensorrt", str(tiny_ckpt), "--profile", profile, "-o", str(out), "--blocks", "3"]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--audio", audio, "--buffer", "1024"]))
    assert rec["format"] == "tensorrt-onnx" and rec["profile"] == profile and rec["precision"] == "fp16"
    assert rec["io"]["trt_shapes"] is None and rec["shapes"] == "static"
    model = onnx.load(str(out))
    opset = 13 if profile == "jetson-jp4" else 17
    assert [i.version for i in model.opset_import if i.domain in ("", "ai.onnx")] == [opset]
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["x"] == [1, 1, 1024] and all(min(d) > 0 for d in dims.values())  # every shape known
    # references: each call stands alone (its recorded state_in), and reproduces its outputs
    refs = np.load(rec["reference"])
    assert refs["x"].shape == (4, 1, 1, 1024) and refs["y"].shape == (4, 1, 1, 1024)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    k = 2
    got = sess.run(None, {i.name: refs[i.name][k] for i in sess.get_inputs()})
    for o, value in zip(sess.get_outputs(), got, strict=True):
        np.testing.assert_allclose(value, refs[o.name][k], atol=1e-6)
    assert np.abs(refs["state_in.0"][1]).max() > 0  # the state really threads through the calls
    # the recipe: acids-deploy's trt/recipe.json layout, and a trtexec line for the board
    recipe = json.loads(Path(rec["recipe"]).read_text())
    (entry,) = recipe["models"]
    assert entry == {"path": "tiny.onnx", "sha256": rec["sha256"], "precision": "fp16", "extra_args": []}
    assert recipe["tensorrt"] == {"jetson-jp4": "8.2", "jetson-jp6": "8.6"}[profile]
    argv = shlex.split(rec["trtexec"])
    assert argv[0].endswith("trtexec") and "--onnx=tiny.onnx" in argv and "--fp16" in argv
    assert recipe["reference"]["path"] == "tiny.ref.npz" and recipe["reference"]["atol"] > 0


def test_dynamic_shapes_fp32_offline_method(tiny_ckpt, tmp_path, audio):
    out = tmp_path / "dec.onnx"
    args = ["tensorrt", str(tiny_ckpt), "--profile", "jetson-jp5", "--method", "decode", "-o", str(out)]
    args += ["--shapes", "dynamic", "--fp32", "--offline", "--blocks", "2", "--audio", audio, "--calls", "2"]
    rec = _artifact(CliRunner().invoke(main_group, args))
    shapes = rec["io"]["trt_shapes"]
    assert shapes == {"min": "x:1x4x32", "opt": "x:1x4x128", "max": "x:1x4x512"}
    recipe = json.loads(Path(rec["recipe"]).read_text())
    assert recipe["models"][0]["precision"] == "fp32" and "--fp16" not in recipe["command"]
    assert "--minShapes=x:1x4x32" in recipe["models"][0]["extra_args"]
    assert np.load(rec["reference"])["x"].shape == (2, 1, 4, 128)


def test_refuses_a_non_jetson_profile_and_bad_buffers(tiny_ckpt, tmp_path):
    res = CliRunner().invoke(main_group, ["tensorrt", str(tiny_ckpt), "--profile", "desktop"])
    assert res.exit_code == 2
    args = ["tensorrt", str(tiny_ckpt), "--profile", "jetson-jp5", "--shapes", "dynamic"]
    args += ["--method", "decode", "--min-buffer", "100"]  # decode steps by 16 samples
    res = CliRunner().invoke(main_group, [*args, "-o", str(tmp_path / "t.onnx")])
    assert res.exit_code == 2 and "multiple of 16" in res.output
    assert not list(tmp_path.glob("t.*"))  # nothing left behind


def test_the_recipe_feeds_acids_deploy(tiny_ckpt, tmp_path, audio):
    bundle = pytest.importorskip("acids_deploy.bundle")
    from acids_deploy.profiles import PROFILES

    out = tmp_path / "tiny.onnx"
    args = ["tensorrt", str(tiny_ckpt), "--profile", "jetson-jp5", "--shapes", "dynamic", "-o", str(out)]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--blocks", "2", "--audio", audio]))
    art = bundle.artifact_from_record(rec, PROFILES["jetson-jp5"])
    (entry,) = bundle.trt_recipe(PROFILES["jetson-jp5"], [bundle._model_entry(art, "models/tiny.onnx")])[
        "models"
    ]
    ours = json.loads(Path(rec["recipe"]).read_text())["models"][0]
    assert entry["extra_args"] == ours["extra_args"] and entry["sha256"] == ours["sha256"]


@pytest.mark.gpu
def test_engine_builds_and_matches_the_references(tiny_ckpt, tmp_path, audio):
    pytest.importorskip(
        "tensorrt",
        reason="building a TensorRT engine needs a CUDA GPU with the tensorrt package (board or GPU host)",
    )
    out = tmp_path / "tiny.onnx"
    args = ["tensorrt", str(tiny_ckpt), "--profile", "jetson-jp6", "-o", str(out), "--audio", audio]
    rec = _artifact(CliRunner().invoke(main_group, [*args, "--blocks", "2"]))
    assert rec["engine"]["max_abs_error"] < atrt.TOLERANCES["fp16"]["atol"]
