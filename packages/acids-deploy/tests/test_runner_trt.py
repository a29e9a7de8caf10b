"""The runner's backend choice and engine check, with a fake ``tensorrt`` module (no GPU needed).

The fake implements the part of TensorRT's Python API the runner uses, in both flavours (the binding API of
TensorRT 8.0-8.4, the named-tensor API of 8.5+); "device memory" is host memory, so the runner's buffers,
shapes and copies are exercised for real. Its engine computes ``y = gain * x``, ``gain`` read from the
``.plan`` file (JSON); a plan that is not JSON does not deserialize.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import make_bundle, make_onnx, make_trt_export

from acids_deploy.bundle import artifact_from_record, build_bundle
from acids_deploy.profiles import get_profile


class HostMemory:
    """Stands in for libcudart: malloc/copies on host memory."""

    def __init__(self) -> None:
        self.blocks: dict[int, ctypes.Array] = {}

    def malloc(self, nbytes: int) -> int:
        buf = ctypes.create_string_buffer(max(1, nbytes))
        self.blocks[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def free(self, ptr: int) -> None:
        self.blocks.pop(ptr, None)

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        ctypes.memmove(array.ctypes.data, ptr, array.nbytes)

    def stream(self) -> int:
        return 0

    def sync(self, stream: int) -> None:
        pass


def fake_tensorrt(named: bool) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.6.2" if named else "8.2.1"
    trt.float32 = "float32"
    trt.nptype = lambda dtype: np.float32
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    io = [("x", True), ("y", False)]
    bounds = ([1, 1, 64], [1, 1, 256], [1, 1, 1024])

    def compute(gain: float, px: int, py: int, n: int) -> None:
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(px))
        np.ctypeslib.as_array((ctypes.c_float * n).from_address(py))[:] = gain * x

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Context:
        def __init__(self, gain: float) -> None:
            self.gain, self.shape, self.addr = gain, None, {}

        # 8.5+: named tensors
        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            return self.shape

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            compute(self.gain, self.addr["x"], self.addr["y"], int(np.prod(self.shape)))
            return True

        # 8.0-8.4: bindings
        def set_binding_shape(self, index: int, shape: tuple) -> bool:
            self.shape = tuple(shape)
            return True

        def get_binding_shape(self, index: int) -> tuple:
            return self.shape

        def execute_v2(self, bindings: list) -> bool:
            compute(self.gain, bindings[0], bindings[1], int(np.prod(self.shape)))
            return True

    class Engine:
        def __init__(self, gain: float) -> None:
            self.gain = gain

        def create_execution_context(self) -> Context:
            return Context(self.gain)

    class NamedEngine(Engine):
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return io[i][0]

        def get_tensor_mode(self, name: str) -> str:
            return "input" if name == "x" else "output"

        def get_tensor_shape(self, name: str) -> tuple:
            return (1, 1, -1)

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def get_tensor_profile_shape(self, name: str, profile: int) -> tuple:
            return bounds

    class BindingEngine(Engine):
        num_bindings = 2

        def get_binding_name(self, i: int) -> str:
            return io[i][0]

        def binding_is_input(self, i: int) -> bool:
            return io[i][1]

        def get_binding_shape(self, i: int) -> tuple:
            return (1, 1, -1)

        def get_binding_dtype(self, i: int) -> str:
            return "float32"

        def get_profile_shape(self, profile: int, index: int) -> tuple:
            return bounds

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            try:
                gain = float(json.loads(data)["gain"])
            except ValueError:
                return None
            return NamedEngine(gain) if named else BindingEngine(gain)

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def jetson_release(gain_onnx: Path, tmp_path: Path):
    """An unpacked jetson-jp4 bundle with references; returns (release dir, load_runner)."""
    profile = get_profile("jetson-jp4")
    art = artifact_from_record(make_trt_export(gain_onnx, "fp16"), profile)
    rec = build_bundle([art], profile, tmp_path / "nano.tar", deps=False)
    rel = tmp_path / "release"
    with tarfile.open(rec["path"]) as tf:
        tf.extractall(rel, filter="data")
    return rel


def load_runner(rel: Path, monkeypatch: pytest.MonkeyPatch, trt: types.ModuleType | None):
    """run.py of ``rel`` as a module, ``tensorrt`` faked (None: not importable), host memory for CUDA."""
    monkeypatch.setitem(sys.modules, "tensorrt", trt)  # None makes `import tensorrt` raise ImportError
    spec = importlib.util.spec_from_file_location(f"acids_run_{id(rel)}", rel / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(run, "cuda_runtime", HostMemory)
    return run


def smoke(run, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict]:
    code = run.main(["--smoke", "--repeat", "1", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("named", [True, False], ids=["trt-8.5+", "trt-8.2"])
def test_tensorrt_chosen_when_profile_engine_and_module(jetson_release, monkeypatch, capsys, named):
    rel = jetson_release
    (rel / "models" / "gain.onnx.plan").write_text(json.dumps({"gain": 0.5}))
    run = load_runner(rel, monkeypatch, fake_tensorrt(named))
    code, report = smoke(run, capsys)
    assert code == 0, report
    (m,) = report["models"]
    assert m["backend"] == "tensorrt" and m["tensorrt"] == ("8.6.2" if named else "8.2.1")
    assert m["outputs"] == [[1, 1, 1024]]  # 8192 smoke frames kept inside the engine's profile (64..1024)
    # the engine's numbers come back through the buffers
    model = run.load_model(run.load_manifest(), run.load_manifest()["models"][0])
    x = np.linspace(-1, 1, 300, dtype=np.float32).reshape(1, 1, 300)
    np.testing.assert_allclose(model.run({"x": x})[0], 0.5 * x)

    # the engine against the bundle's references
    assert run.main(["--verify"]) == 0
    (v,) = json.loads(capsys.readouterr().out)["models"]
    assert v["status"] == "verified" and v["max_abs_error"] < 1e-6 and v["calls"] == 2

    # an engine that computes something else fails the check, with the size of the difference
    (rel / "models" / "gain.onnx.plan").write_text(json.dumps({"gain": 0.6}))
    assert run.main(["--verify"]) == 3
    (v,) = json.loads(capsys.readouterr().out)["models"]
    assert v["status"] == "failed" and "differs from the references" in v["error"]
    assert 0.05 < v["max_abs_error"] <= 0.1 + 1e-6


def test_onnxruntime_otherwise_and_why(jetson_release, gain_onnx, tmp_path, monkeypatch, capsys):
    rel = jetson_release
    plan = rel / "models" / "gain.onnx.plan"

    # no engine built (no trtexec on the board): onnxruntime, and the report says why
    run = load_runner(rel, monkeypatch, fake_tensorrt(True))
    code, report = smoke(run, capsys)
    assert code == 0 and report["models"][0]["backend"] == "onnxruntime"
    assert "no TensorRT engine built" in report["models"][0]["fallback"]
    assert run.main(["--verify"]) == 0
    v = json.loads(capsys.readouterr().out)["models"][0]
    assert v["status"] == "not verified" and "no TensorRT engine" in v["reason"]

    # an engine, but tensorrt does not import here: onnxruntime; the check says "not verified"
    plan.write_text(json.dumps({"gain": 0.5}))
    run = load_runner(rel, monkeypatch, None)
    code, report = smoke(run, capsys)
    assert code == 0 and report["models"][0]["backend"] == "onnxruntime"
    assert "tensorrt does not import" in report["models"][0]["fallback"]
    assert run.main(["--verify"]) == 0
    v = json.loads(capsys.readouterr().out)["models"][0]
    assert v["status"] == "not verified" and "tensorrt does not import" in v["reason"]
    # forcing TensorRT where it cannot run is a failure, not a silent fallback
    code, report = smoke(run, capsys, "--backend", "tensorrt")
    assert code == 3 and "TensorRT backend is not available" in report["models"][0]["error"]

    # an engine this TensorRT cannot load fails the smoke test (it does not fall back)
    plan.write_bytes(b"\x00engine built elsewhere")
    run = load_runner(rel, monkeypatch, fake_tensorrt(True))
    code, report = smoke(run, capsys)
    assert code == 3 and "cannot load gain.onnx.plan" in report["models"][0]["error"]
    # ... unless onnxruntime is asked for
    code, report = smoke(run, capsys, "--backend", "onnxruntime")
    assert code == 0 and report["models"][0]["backend"] == "onnxruntime"

    # a profile without TensorRT never uses it, even where it imports
    rec = make_bundle(tmp_path, gain_onnx, "pi.tar", profile="rpi-bookworm")
    pi = tmp_path / "pi"
    with tarfile.open(rec["path"]) as tf:
        tf.extractall(pi, filter="data")
    (pi / "models" / "gain.onnx.plan").write_text(json.dumps({"gain": 0.5}))
    run = load_runner(pi, monkeypatch, fake_tensorrt(True))
    code, report = smoke(run, capsys)
    assert code == 0 and report["models"][0]["backend"] == "onnxruntime"
    assert "profile has no TensorRT" in report["models"][0]["fallback"]


def test_fixed_size_engine_streams_blocks_with_state(tmp_path: Path, monkeypatch):
    """--wav/--stdin through a model with a fixed buffer: blocks, last one padded, state threaded."""
    rel = tmp_path / "rel"
    rec = make_bundle(tmp_path, make_onnx(tmp_path / "stub" / "stub.onnx"), "d.tar")
    with tarfile.open(rec["path"]) as tf:
        tf.extractall(rel, filter="data")
    runner = load_runner(rel, monkeypatch, None)
    io = runner.IO

    class Counter:  # y = x + the number of calls so far, the count kept in a 1-element state
        inputs = [io("x", [1, 1, 4], "float32"), io("state_in.0", [1], "float32")]
        outputs = [io("y", [1, 1, 4], "float32"), io("state_out.0", [1], "float32")]

        def feeds(self, frames, first=None):
            return runner.make_feeds(self.inputs, frames, first)

        def run(self, feeds):
            s = feeds["state_in.0"] + 1
            return [feeds["x"] + s[0], s]

    x = np.zeros((1, 1, 10), np.float32)
    y = runner.Stream(Counter()).process(x)
    np.testing.assert_array_equal(y[0, 0], [1, 1, 1, 1, 2, 2, 2, 2, 3, 3])
