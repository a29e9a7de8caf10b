"""Bundles, profiles, inventory, the board-side scripts, and the no-torch rule (no SSH needed)."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_onnx, make_trt_export

from acids_deploy.bundle import board_file
from acids_deploy.cli import main_group
from acids_deploy.profiles import PROFILES, manylinux_ladder


def run_cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main_group, list(args), input=input, catch_exceptions=False)


def one_record(result) -> dict:
    (line,) = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return json.loads(line)


def members(tar: str | Path) -> dict[str, bytes]:
    with tarfile.open(tar) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def test_bundle_from_file_has_manifest_of_every_file_and_is_deterministic(gain_onnx: Path, tmp_path: Path):
    res = run_cli("bundle", str(gain_onnx), "-p", "desktop", "--no-deps", "-o", str(tmp_path / "a.tar"))
    assert res.exit_code == 0, res.stderr
    rec = one_record(res)
    assert rec["kind"] == "bundle" and rec["profile"] == "desktop" and len(rec["id"]) == 16
    files = members(rec["path"])
    manifest = json.loads(files.pop("manifest.json"))
    assert (
        set(files)
        == set(manifest["files"])
        == {"models/gain.onnx", "run.py", "systemd/acids-runner.service.in"}
    )
    for name, data in files.items():
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["models"][0]["sha256"] == hashlib.sha256(gain_onnx.read_bytes()).hexdigest()
    assert rec["sha256"] == hashlib.sha256(Path(rec["path"]).read_bytes()).hexdigest()

    res = run_cli("bundle", str(gain_onnx), "-p", "desktop", "--no-deps", "-o", str(tmp_path / "b.tar"))
    assert one_record(res)["sha256"] == rec["sha256"]  # same inputs, same bytes


def test_bundle_from_artifact_records(gain_onnx: Path, tmp_path: Path):
    digest = hashlib.sha256(gain_onnx.read_bytes()).hexdigest()
    art = {
        "kind": "artifact",
        "version": 1,
        "format": "tensorrt-onnx",
        "path": str(gain_onnx),
        "sha256": digest,
        "profile": "jetson-jp4",
        "io": {
            "sample_rate": 44100,
            "trt_shapes": {"min": "x:1x1x256", "opt": "x:1x1x4096", "max": "x:1x1x65536"},
        },
        "check": {"max_abs_error": 0.0},
    }
    out = tmp_path / "nano.tar"
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 0, res.stderr
    rec = one_record(res)
    assert rec["tensorrt"] == {"expected": "8.0 (JetPack 4.6) / 8.2 (JetPack 4.6.1+)"}
    assert rec["models"][0]["format"] == "tensorrt-onnx"
    files = members(out)
    recipe = json.loads(files["trt/recipe.json"])
    (entry,) = recipe["models"]
    assert entry["sha256"] == digest and entry["precision"] == "fp16"  # the profile's default
    assert "--minShapes=x:1x1x256" in entry["extra_args"] and entry["command_from"] == "acids-deploy"
    assert entry["command"][:4] == ["{trtexec}", "--onnx={onnx}", "--saveEngine={engine}", "--fp16"]

    # the record's precision wins over the profile's default
    art_fp32 = dict(art, precision="fp32")
    res = run_cli(
        "bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art_fp32) + "\n"
    )
    assert res.exit_code == 0, res.stderr
    (entry,) = json.loads(members(out)["trt/recipe.json"])["models"]
    assert entry["precision"] == "fp32" and "--fp16" not in entry["command"]
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out),
                  input=json.dumps(dict(art, precision="int8")) + "\n")  # fmt: skip
    assert res.exit_code == 65 and "precision 'int8'" in res.stderr
    files = members(out)
    manifest = json.loads(files["manifest.json"])
    assert manifest["models"][0]["sample_rate"] == 44100 and manifest["python"] == "3.6"

    # wrong profile, wrong checksum: refused as bad data (65)
    res = run_cli("bundle", "-p", "rpi-bookworm", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 65 and "exported for profile 'jetson-jp4'" in res.stderr
    art.update(sha256="0" * 64)
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 65 and "differs" in res.stderr
    res = run_cli("bundle", str(tmp_path / "nope.onnx"), "-p", "desktop", "-o", str(out))
    assert res.exit_code == 66


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_export_companions_and_its_trtexec_line(gain_onnx: Path, tmp_path: Path, precision: str):
    art = make_trt_export(gain_onnx, precision)
    out = tmp_path / "nano.tar"
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 0, res.stderr
    files = members(out)
    manifest = json.loads(files["manifest.json"])
    (model,) = manifest["models"]
    assert model["precision"] == precision
    ref, rcp = model["reference"], model["recipe"]
    assert ref["path"] == "models/gain.ref.npz" and rcp["path"] == "models/gain.trt.json"
    for item, src in ((ref, art["reference"]), (rcp, art["recipe"])):
        digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        assert item["sha256"] == digest == manifest["files"][item["path"]]["sha256"]
        assert files[item["path"]] == Path(src).read_bytes()
    assert ref["atol"] == {"fp16": 2e-2, "fp32": 1e-3}[precision]  # the recipe's tolerance
    (entry,) = json.loads(files["trt/recipe.json"])["models"]
    # acids-export's line, board-side values as placeholders, nothing else changed
    assert entry["command_from"] == "acids-export recipe models/gain.trt.json"
    want = ["{trtexec}", "--onnx={onnx}", "--saveEngine={engine}"] + (
        ["--fp16"] if precision == "fp16" else []
    )
    want += ["--minShapes=x:1x1x64", "--optShapes=x:1x1x256", "--maxShapes=x:1x1x1024", "--noTF32"]
    assert entry["command"] == [*want, "--timingCacheFile={timing_cache}"]
    assert entry["precision"] == precision and entry["reference"] == ref

    # a bare ONNX with the companions beside it gets them too
    res = run_cli("bundle", str(gain_onnx), "-p", "jetson-jp4", "--no-deps", "-o", str(tmp_path / "f.tar"))
    assert res.exit_code == 0 and "models/gain.ref.npz" in members(tmp_path / "f.tar")

    # a record whose precision disagrees with its recipe, a recipe of another export, a missing reference
    other = "fp16" if precision == "fp32" else "fp32"
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out),
                  input=json.dumps(dict(art, precision=other)) + "\n")  # fmt: skip
    assert res.exit_code == 65 and f"builds {precision} but the artifact record says {other}" in res.stderr
    recipe = json.loads(Path(art["recipe"]).read_text())
    recipe["models"][0]["sha256"] = "0" * 64
    Path(art["recipe"]).write_text(json.dumps(recipe))
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 65 and "recipe of another export" in res.stderr
    Path(art["reference"]).unlink()
    res = run_cli("bundle", "-p", "jetson-jp4", "--no-deps", "-o", str(out), input=json.dumps(art) + "\n")
    assert res.exit_code == 66 and "reference file is missing" in res.stderr


def _dummy_wheel(d: Path, name: str = "acidsdummy", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel, so dependency resolution is tested without any package index."""
    d.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    content = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = []
    for path, data in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(data)}")
    rows.append(f"{info}/RECORD,,")
    content[f"{info}/RECORD"] = ("\n".join(rows) + "\n").encode()
    whl = d / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, data in content.items():
            z.writestr(path, data)
    return whl


def test_dependencies_from_a_wheelhouse_offline(gain_onnx: Path, tmp_path: Path):
    house = tmp_path / "wheels"
    _dummy_wheel(house)
    out = tmp_path / "pi.tar"
    args = ["bundle", str(gain_onnx), "-p", "rpi-bookworm", "-o", str(out), "--wheelhouse", str(house)]
    res = run_cli(*args, "--offline", "--require", "acidsdummy==0.1")
    assert res.exit_code == 0, res.stderr
    rec = one_record(res)
    assert rec["dependencies"] == ["acidsdummy==0.1"]
    files = members(out)
    assert files["site/acidsdummy/__init__.py"] == b"VALUE = 42\n"
    assert "site/acidsdummy/__init__.py" in json.loads(files["manifest.json"])["files"]

    # the profile's own pins (onnxruntime==1.32.0 ...) are not in this wheelhouse: a clear failure (69)
    res = run_cli(*args, "--offline")
    assert res.exit_code == 69 and "onnxruntime" in res.stderr
    res = run_cli("bundle", str(gain_onnx), "-p", "desktop", "-o", str(out), "--offline")
    assert res.exit_code == 2  # --offline without a wheelhouse


def test_pip_download_step_uses_board_tags(gain_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`pip download` with the board's tags, served from a local folder (PIP_NO_INDEX: no network)."""
    src = tmp_path / "index"
    _dummy_wheel(src)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(src))
    house = tmp_path / "house"
    out = tmp_path / "jp4.tar"
    res = run_cli(
        "bundle", str(gain_onnx), "-p", "jetson-jp4", "-o", str(out), "--wheelhouse", str(house),
        "--require", "acidsdummy",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert (house / "acidsdummy-0.1-py3-none-any.whl").is_file()
    assert "site/acidsdummy/__init__.py" in members(out)


def test_manylinux_ladder():
    jp4 = PROFILES["jetson-jp4"].platforms()
    assert jp4[0] == "manylinux_2_27_aarch64" and "manylinux_2_17_aarch64" in jp4
    assert "manylinux2014_aarch64" in jp4 and not any("2_16" in t or "manylinux1" in t for t in jp4)
    x86 = manylinux_ladder("x86_64", (2, 35))
    assert {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64"} <= set(x86)
    assert PROFILES["rpi-bookworm"].platforms()[0] == "manylinux_2_36_aarch64"
    assert {p.name for p in PROFILES.values()} == {
        "desktop", "rpi-bookworm", "jetson-jp4", "jetson-jp5", "jetson-jp6",
    }  # fmt: skip


def test_profiles_match_acids_export():
    """Same names as acids-export's profiles, and the same runtime facts: the onnxruntime pin and Python
    of each board, and the opset ceiling of its TensorRT parser (read from the monorepo's source: acids-deploy
    does not depend on acids-export)."""
    import importlib.util

    src = Path(__file__).resolve().parents[2] / "acids-export" / "src" / "acids_export" / "profiles.py"
    if not src.is_file():
        pytest.skip(f"acids-export's source is not beside this package ({src})")
    spec = importlib.util.spec_from_file_location("_export_profiles", src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while the class is created
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    assert set(mod.PROFILES) == set(PROFILES)
    for name, p in PROFILES.items():
        theirs = mod.PROFILES[name]
        pins = dict(r.split("==") for r in p.requirements if "==" in r)
        if "onnxruntime" in pins:
            assert ".".join(pins["onnxruntime"].split(".")[:2]) in theirs.runtime, (name, theirs.runtime)
        if p.arch == "aarch64":
            assert f"Python {p.python}" in theirs.runtime, (name, theirs.runtime)
        assert (p.tensorrt is None) == (theirs.tensorrt is None), name
        if p.tensorrt is not None:
            assert p.tensorrt.max_opset == theirs.opset, name
            assert theirs.tensorrt in p.tensorrt.versions, name


@pytest.mark.parametrize("name", ["run.py", "agent.py"])
def test_board_scripts_are_python36(name: str):
    """The board side runs on JetPack 4's Python 3.6: its grammar, and no 3.7+ library features."""
    source = board_file(name).decode()
    ast.parse(source, feature_version=(3, 6))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr), f"f-string at line {node.lineno}"
        assert not isinstance(node, ast.NamedExpr)
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ("__future__", "dataclasses", "importlib.resources")
        if isinstance(node, ast.Import):
            assert not any(a.name in ("dataclasses", "contextvars") for a in node.names)
        if isinstance(node, ast.keyword):
            assert node.arg not in ("capture_output", "text"), f"{node.arg}= is Python 3.7+"
    for banned in (r"\bbreakpoint\(", r"asyncio\.run\(", r"\.removeprefix\(", r"math\.prod", r"\bacids_"):
        assert not re.search(banned, source), banned
    compile(source, name, "exec")


def test_runner_smoke_and_wav_locally(gain_onnx: Path, nan_onnx: Path, tmp_path: Path):
    res = run_cli("bundle", str(gain_onnx), "-p", "desktop", "--no-deps", "-o", str(tmp_path / "a.tar"))
    rel = tmp_path / "rel"
    with tarfile.open(one_record(res)["path"]) as tf:
        tf.extractall(rel, filter="data")
    proc = subprocess.run([sys.executable, str(rel / "run.py"), "--smoke"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["models"][0]["outputs"] == [[1, 1, 8192]] and report["rtf"] > 0

    import wave

    import numpy as np

    x = (0.5 * np.sin(np.arange(4800) / 10.0) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(x.tobytes())
    argv = [
        sys.executable,
        str(rel / "run.py"),
        "--wav",
        str(tmp_path / "in.wav"),
        "--out",
        str(tmp_path / "o.wav"),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(tmp_path / "o.wav")) as w:
        y = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    np.testing.assert_allclose(y, x * 0.5, atol=2)

    pcm = (0.1 * np.ones(10000, dtype="<f4")).tobytes()
    proc = subprocess.run([sys.executable, str(rel / "run.py"), "--stdin"], input=pcm, capture_output=True)
    assert proc.returncode == 0
    np.testing.assert_allclose(np.frombuffer(proc.stdout, dtype="<f4"), 0.05, rtol=1e-6)

    res = run_cli("bundle", str(nan_onnx), "-p", "desktop", "--no-deps", "-o", str(tmp_path / "n.tar"))
    rel = tmp_path / "reln"
    with tarfile.open(one_record(res)["path"]) as tf:
        tf.extractall(rel, filter="data")
    proc = subprocess.run([sys.executable, str(rel / "run.py"), "--smoke"], capture_output=True, text=True)
    assert proc.returncode == 3 and "not finite" in json.loads(proc.stdout)["models"][0]["error"]


def test_inventory_errors_and_selection(tmp_path: Path):
    from acids_deploy.inventory import load_inventory

    inv = tmp_path / "boards.toml"
    inv.write_text(
        '[defaults]\nuser = "pi"\nknown_hosts = "kh"\n'
        '[boards.a]\nhost = "127.0.0.1"\nprofile = "rpi-bookworm"\ngroups = ["studio"]\n'
        '[boards.b]\nhost = "127.0.0.1"\nport = 2222\nprofile = "jetson-jp4"\n'
        'groups = ["studio", "jetsons"]\n'
        '[boards.c]\nhost = "127.0.0.1"\nprofile = "desktop"\n'
    )
    loaded = load_inventory(inv)
    assert [b.name for b in loaded.select(["studio"])] == ["a", "b"]
    assert [b.name for b in loaded.select(["c,jetsons"])] == ["b", "c"]
    assert loaded.boards["a"].known_hosts == str(tmp_path / "kh")
    res = run_cli("push", "x.tar", "-i", str(inv), "-t", "a")
    assert res.exit_code == 66  # the bundle does not exist
    res = run_cli("boards", "-i", str(inv), "--no-check")
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 3

    inv.write_text('[boards.a]\nhost = "h"\nprofile = "rpi-bookworm"\nprot = 22\n')
    res = run_cli("boards", "-i", str(inv), "--no-check")
    assert res.exit_code == 2 and "unknown key 'prot'" in res.stderr
    inv.write_text('[boards.a]\nhost = "h"\nprofile = "rpi-bullseye"\n')
    res = run_cli("boards", "-i", str(inv), "--no-check")
    assert res.exit_code == 2 and "unknown profile" in res.stderr
    res = run_cli("boards", "-i", str(tmp_path / "none.toml"))
    assert res.exit_code == 66


def test_no_torch_import():
    code = (
        "import sys, acids_deploy.cli, acids_deploy.push, acids_deploy.bundle, acids_deploy.ssh;"
        "from click.testing import CliRunner;"
        "r = CliRunner().invoke(acids_deploy.cli.main_group, ['--help']); assert r.exit_code == 0;"
        "bad = [m for m in ('torch', 'onnx', 'numpy', 'onnxruntime') if m in sys.modules];"
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_help_of_every_command():
    for cmd in ("boards", "bundle", "push", "status", "rollback", "logs"):
        res = run_cli(cmd, "--help")
        assert res.exit_code == 0 and "Usage" in res.stdout


def test_make_onnx_loads(tmp_path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(make_onnx(tmp_path / "g.onnx")), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "x"
