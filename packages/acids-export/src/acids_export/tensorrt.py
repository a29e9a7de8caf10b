"""The TensorRT variant of a Jetson profile: ONNX for the board's parser, references, and the build recipe.

Engines are not portable (GPU, TensorRT version, JetPack), so the host never ships one: it ships

- ``NAME.onnx``: the profile's ONNX (its opset, IR version and TensorRT operator table, see
  :mod:`acids_export.profiles`), either **static** (batch 1, one buffer: every shape known, what TensorRT
  8.2 builds best) or **dynamic** with an optimisation profile (min/opt/max buffers for ``x``; state tensors
  keep fixed shapes);
- ``NAME.ref.npz``: reference inputs and outputs for on-device comparison, one entry per graph input and
  output (``x``, ``state_in.<i>``, ``y``, ``state_out.<i>``), the leading axis being the call: call ``k``
  of a streaming model is fed the recorded ``state_in`` of call ``k``, so each call compares on its own and
  fp16 drift does not accumulate. Computed with onnxruntime on real audio, after the artifact was checked
  against eager PyTorch;
- ``NAME.trt.json``: the engine-build recipe, in acids-deploy's ``trt/recipe.json`` layout (``tensorrt``,
  ``trtexec``, ``cache_key``, ``models: [{path, sha256, precision, extra_args}]``) plus the full
  ``trtexec`` command line, the shapes, the reference file and its tolerances.

Where ``import tensorrt`` works (a CUDA machine, TensorRT >= 8.5 API), :func:`build_and_compare` builds the
engine from the ONNX and compares it with the references for real.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from acids_core.errors import DataError

log = logging.getLogger(__name__)

RECIPE_FORMAT = "acids-trt-recipe"
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it
#: on-device comparison tolerances (max abs error on audio in [-1, 1]); fp16 keeps ~3 decimal digits
TOLERANCES = {"fp16": {"atol": 2e-2, "rtol": 1e-2}, "fp32": {"atol": 1e-3, "rtol": 1e-3}}


def companions(onnx_path: str | Path) -> tuple[Path, Path]:
    """The reference (.ref.npz) and recipe (.trt.json) paths beside an ONNX file."""
    p = Path(onnx_path)
    return p.with_suffix(".ref.npz"), p.with_suffix(".trt.json")


def shape_arg(shapes: dict[str, list[int]]) -> str:
    """``{"x": [1, 1, 2048]}`` -> ``x:1x1x2048`` (trtexec's --minShapes/--optShapes/--maxShapes syntax)."""
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items())


def optimisation_profile(
    meta: dict[str, Any], in_channels: int, in_ratio: int, min_buffer: int, max_buffer: int
) -> dict[str, str]:
    """min/opt/max shapes of ``x`` (batch 1) for a dynamic-time graph, in trtexec syntax."""
    frames = {
        "min": max(min_buffer // in_ratio, 1),
        "opt": int(meta["buffer"]) // in_ratio,
        "max": max_buffer // in_ratio,
    }
    return {k: shape_arg({"x": [1, in_channels, n]}) for k, n in frames.items()}


def reference_io(path: str | Path, x: np.ndarray, calls: int) -> dict[str, np.ndarray]:
    """Run the ONNX file with onnxruntime on ``calls`` consecutive buffers of ``x`` (1, C, T).

    Returns one array per graph input and output, stacked over the calls (state threaded through).
    """
    import onnxruntime as ort

    from acids_export.onnx import read_meta

    meta = read_meta(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    in_ratio = int(meta["params"][1])
    block = int(meta["buffer"]) // in_ratio
    if x.shape[-1] < calls * block:
        raise DataError(f"reference audio too short: {x.shape[-1]} frames for {calls} x {block}")
    state = [np.zeros(s["shape"], s.get("dtype", "float32")) for s in meta["state"]]
    ins: dict[str, list[np.ndarray]] = {i.name: [] for i in sess.get_inputs()}
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in sess.get_outputs()}
    for k in range(calls):
        feed = {"x": np.ascontiguousarray(x[..., k * block : (k + 1) * block], np.float32)}
        feed.update({f"state_in.{i}": s for i, s in enumerate(state)})
        result = sess.run(None, feed)
        state = list(result[1:])
        for name, value in feed.items():
            ins[name].append(value)
        for o, value in zip(sess.get_outputs(), result, strict=True):
            outs[o.name].append(value)
    return {name: np.stack(values) for name, values in {**ins, **outs}.items()}


def recipe(
    onnx_path: str | Path,
    *,
    sha256: str,
    profile: Any,
    precision: str,
    shapes: dict[str, str] | None,
    reference: str | Path,
    trtexec: str = TRTEXEC,
) -> dict[str, Any]:
    """The engine-build recipe (acids-deploy ``trt/recipe.json`` layout, one model, paths relative)."""
    name = Path(onnx_path).name
    extra = [f"--{k}Shapes={v}" for k, v in sorted((shapes or {}).items())]
    argv = [trtexec, f"--onnx={name}", f"--saveEngine={name}.plan"]
    argv += [f"--{precision}"] if precision != "fp32" else []
    argv += extra
    argv += [f"--timingCacheFile=timing-trt{profile.tensorrt}.cache"]
    return {
        "format": RECIPE_FORMAT,
        "format_version": 1,
        "profile": profile.name,
        "tensorrt": profile.tensorrt,
        "trtexec": trtexec,
        "cache_key": ["onnx sha256", "TensorRT version", "device", "precision"],
        "models": [{"path": name, "sha256": sha256, "precision": precision, "extra_args": extra}],
        "shapes": shapes or "static",
        "command": argv,
        "command_line": " ".join(shlex.quote(a) for a in argv),
        "reference": {
            "path": Path(reference).name,
            "layout": "one array per graph input/output, leading axis = call; feed each call's inputs",
            "precision": precision,
            **TOLERANCES[precision],
        },
    }


def write_recipe(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def build_and_compare(onnx_path: str | Path, reference: str | Path, precision: str) -> dict[str, float]:
    """Build an engine from the ONNX with the TensorRT Python API (>= 8.5) and run the references on it.

    Needs ``tensorrt`` and a CUDA torch (device buffers). Returns ``{"max_abs_error": ..., "build_s": ...}``;
    DataError when the parser or the builder refuses the graph.
    """
    import time

    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10 needs it spelled out
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DataError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors[:300]}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    refs = dict(np.load(str(reference)))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in tuple(t.shape) for t in inputs):
        opt = builder.create_optimization_profile()
        for t in inputs:
            shape = refs[t.name].shape[1:]
            opt.set_shape(t.name, shape, shape, shape)
        config.add_optimization_profile(opt)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if plan is None:
        raise DataError(f"{onnx_path}: TensorRT {trt.__version__} failed to build an engine")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    calls = refs["x"].shape[0]
    err = 0.0
    stream = torch.cuda.current_stream()
    for k in range(calls):
        buffers = {}
        for n in names:
            if is_input[n]:
                buffers[n] = torch.from_numpy(np.ascontiguousarray(refs[n][k])).cuda()
                context.set_input_shape(n, tuple(buffers[n].shape))
        for n in names:
            if not is_input[n]:
                buffers[n] = torch.empty(tuple(context.get_tensor_shape(n)), device="cuda")
            context.set_tensor_address(n, buffers[n].data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        for n in names:
            if not is_input[n]:
                err = max(err, float(np.abs(buffers[n].cpu().numpy() - refs[n][k]).max()))
    return {"max_abs_error": err, "build_s": build_s, "tensorrt": str(trt.__version__)}


def probe_lengths(path: str | Path, method: Any, buffers: list[int]) -> None:
    """Run the (dynamic) graph once at each buffer size; DataError when a size fails or gives a bad length."""
    import onnxruntime as ort

    from acids_export.onnx import read_meta

    meta = read_meta(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for b in buffers:
        feed = {"x": np.zeros((1, method.in_channels, b // method.in_ratio), np.float32)}
        feed.update({f"state_in.{i}": np.zeros(s["shape"], np.float32) for i, s in enumerate(meta["state"])})
        try:
            y = sess.run(None, feed)[0]
        except Exception as e:
            raise DataError(
                f"the graph does not run at a {b}-sample buffer: {str(e).splitlines()[0][:200]}"
            ) from None
        want = (1, method.out_channels, b // method.out_ratio)
        if tuple(y.shape) != want:
            raise DataError(f"at a {b}-sample buffer the graph gives {tuple(y.shape)}, not {want}")
