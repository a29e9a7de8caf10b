"""ONNX export of one method at a board profile, the streaming state as explicit inputs/outputs.

Streaming: the state buffers of the method (found by running one block, see the contract in
:mod:`acids_export.registry`) become graph inputs ``state_in.<i>`` and outputs ``state_out.<i>``, so any
runtime streams the model by feeding each call's ``state_out`` back as the next ``state_in`` (zeros at the
start). Batch is 1 and time is dynamic. Offline: batch and time are dynamic, no state.

The exporter is torch's TorchScript-based one (``dynamo=False``): it writes opset 13 and 17 directly,
while the dynamo exporter starts at opset 18 and stamps IR 10, which the Jetson runtimes reject. The file
is then checked against the profile (opset, IR version clamped, operator table), ``onnx.checker`` with
``full_check`` and saved as one self-contained file (no external data).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acids_core.errors import DataError
from acids_export.dft import stft_as_convolution
from acids_export.profiles import Profile
from acids_export.quiet import captured, short_reason
from acids_export.registry import Loaded, MethodSpec

log = logging.getLogger(__name__)

META_KEY = "acids_export"


def _call(module: nn.Module, method: str, x: torch.Tensor) -> torch.Tensor:
    return module(x) if method == "forward" else getattr(module, method)(x)


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


def find_state(module: nn.Module, method: MethodSpec, block: int) -> list[tuple[str, torch.Tensor]]:
    """Run one zero block through ``method``; the buffers it reassigned or changed are its state.

    Returns (buffer name, zero tensor of the materialised shape). The module's state is reset to that
    zero state afterwards, so a later offline trace is not affected.
    """
    before = {n: (b, b.detach().clone()) for n, b in module.named_buffers()}
    x = torch.zeros(1, method.in_channels, block // method.in_ratio)
    with torch.no_grad():
        _call(module, method.name, x)
    state = []
    for n, b in module.named_buffers():
        old, old_value = before.get(n, (None, None))
        if b is not old or b.shape != old_value.shape or not torch.equal(b, old_value):
            if b is old:
                log.warning("state buffer %s is mutated in place: the contract asks for reassignment", n)
            state.append((n, torch.zeros_like(b)))
    return state


class _ExplicitState(nn.Module):
    """``(x, *state) -> (y, *new_state)`` around a stateful module (for tracing)."""

    def __init__(self, module: nn.Module, method: str, names: list[str]):
        super().__init__()
        self.inner = module
        self.method = method
        self.names = names

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        owners = [_owner(self.inner, n) for n in self.names]
        for (mod, attr), s in zip(owners, states, strict=True):
            mod._buffers[attr] = s
        y = _call(self.inner, self.method, x)
        return (y, *[mod._buffers[attr] for mod, attr in owners])


class _Method(nn.Module):
    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.inner = module
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _call(self.inner, self.method, x)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*dynamo.*")
        # the GRU hint is about batch > 1 with an implicit h0; streaming passes h0, offline starts at 0
        warnings.filterwarnings("ignore", message=r".*batch_size other than 1.*")
        warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1.*")
        yield


def all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


_layer_norm = torch.nn.functional.layer_norm


def _decomposed_layer_norm(
    input: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``F.layer_norm`` from ReduceMean/Sub/Mul/Add/Sqrt/Div (for runtimes without LayerNormalization)."""
    dims = list(range(-len(normalized_shape), 0))
    centered = input - input.mean(dims, keepdim=True)
    y = centered / torch.sqrt((centered * centered).mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


@contextlib.contextmanager
def layer_norm_decomposed(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``F.layer_norm`` traces to elementary operators (TensorRT 8.5 has no LayerNorm)."""
    if not enabled:
        yield
        return
    torch.nn.functional.layer_norm = _decomposed_layer_norm
    try:
        yield
    finally:
        torch.nn.functional.layer_norm = _layer_norm


def _dtype_name(t: torch.Tensor) -> str:
    """numpy/torch name of a tensor's dtype (``float32``), as the metadata records state tensors."""
    return str(t.dtype).removeprefix("torch.")


def profile_problems(model: Any, profile: Profile, allow_ops: tuple[str, ...] = ()) -> list[str]:
    """Everything in ``model`` that breaks ``profile`` (one line each, the operator named)."""
    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > profile.opset:
            problems.append(f"opset {imp.version} > {profile.opset}, the most {profile.name} accepts")
    if model.ir_version > profile.ir_version:
        problems.append(f"IR version {model.ir_version} > {profile.ir_version}")
    if profile.tensorrt:  # TensorRT has no float64 tensors (the parser casts weights, not graph I/O)
        for v in [*model.graph.input, *model.graph.output]:
            if v.type.tensor_type.elem_type == 11:  # onnx.TensorProto.DOUBLE
                problems.append(f"float64 tensor '{v.name}' (TensorRT {profile.tensorrt} has no float64)")
    seen = set()
    for node in all_nodes(model.graph):
        key = (node.domain, node.op_type)
        if key in seen:
            continue
        seen.add(key)
        if node.op_type in allow_ops:
            continue
        why = profile.op_problem(node.op_type, node.domain)
        if why:
            problems.append(why)
    return problems


def export(
    loaded: Loaded,
    profile: Profile,
    out: str | Path,
    *,
    method: str | None = None,
    allow_ops: tuple[str, ...] = (),
    buffer: int | None = None,
    static: bool = False,
) -> dict[str, Any]:
    """Export ``method`` of ``loaded`` for ``profile`` to ``out``; return the metadata stored in the file.

    ``buffer``: the block size in samples traced (default: the profile's). ``static``: every axis fixed at
    batch 1 and that buffer (what TensorRT builds fastest, and all TensorRT 8.2 handles without profiles).
    Raises DataError naming the operator or setting when the result breaks the profile (nothing written).
    """
    import onnx

    spec = loaded.spec
    names = [m.name for m in spec.methods]
    m = spec.method(method or ("forward" if "forward" in names else names[0]))
    module = loaded.module
    block = max(buffer or profile.buffer, m.in_ratio, m.out_ratio)
    streaming = spec.streaming
    state = find_state(module, m, block) if streaming else []
    x = torch.zeros(1, m.in_channels, block // m.in_ratio)
    input_names = ["x"] + [f"state_in.{i}" for i in range(len(state))]
    output_names = ["y"] + [f"state_out.{i}" for i in range(len(state))]
    if streaming:
        wrapper: nn.Module = _ExplicitState(module, m.name, [n for n, _ in state])
        args: tuple[torch.Tensor, ...] = (x, *[s for _, s in state])
        dynamic = {"x": {2: "frames_in"}, "y": {2: "frames_out"}}
    else:
        wrapper = _Method(module, m.name)
        args = (x,)
        dynamic = {"x": {0: "batch", 2: "frames_in"}, "y": {0: "batch", 2: "frames_out"}}
    saved = {n: _owner(module, n) for n, _ in state}
    saved = {n: (mod, attr, mod._buffers[attr]) for n, (mod, attr) in saved.items()}
    fft_free = "STFT" in profile.denied or profile.opset < 17
    norm_free = "LayerNormalization" in profile.denied and "LayerNormalization" not in allow_ops

    def trace(axes: dict[str, dict[int, str]] | None) -> bytes:
        buf = io.BytesIO()
        with (
            captured(),
            _quiet_exporter(),
            torch.no_grad(),
            stft_as_convolution(fft_free),
            layer_norm_decomposed(norm_free),
        ):
            torch.onnx.export(
                wrapper,
                args,
                buf,
                dynamo=False,
                opset_version=profile.opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        return buf.getvalue()

    dynamic_time = not static
    try:
        try:
            data = trace(None if static else dynamic)
        except Exception as e:
            if static or not streaming:
                raise
            # some layers only trace at a known length (e.g. Tensor.unfold): a streaming graph runs at one
            # block size anyway, so fall back to a static buffer (also what TensorRT prefers)
            log.debug("dynamic-length export failed: %s", e)
            log.warning(
                "%s: no dynamic-length graph (%s); exporting for %d-sample buffers",
                m.name,
                short_reason(e, 120),
                block,
            )
            dynamic_time = False
            data = trace(None)
    except Exception as e:
        log.debug("ONNX export failed: %s", e)
        raise DataError(
            f"{m.name} does not export to ONNX opset {profile.opset}: {short_reason(e)} (details: -v)"
        ) from None
    finally:
        for mod, attr, value in saved.values():
            mod._buffers[attr] = value
    model = onnx.load_from_string(data)
    y_dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(y_dims) == 3:  # the exporter may leave the channel axis symbolic: declare it (TensorRT likes it)
        y_dims[1].dim_value = m.out_channels
        if streaming:
            y_dims[0].dim_value = 1
    for out_value, (_, s) in zip(model.graph.output[1:], state, strict=True):  # state keeps its shape
        for d, n in zip(out_value.type.tensor_type.shape.dim, s.shape, strict=True):
            d.dim_value = int(n)
    if model.ir_version > profile.ir_version:
        model.ir_version = profile.ir_version  # the exporter stamps its own; the target reads older
    problems = profile_problems(model, profile, allow_ops)
    if problems:
        raise DataError(f"refused for {profile.name}: {'; '.join(dict.fromkeys(problems))}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise DataError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0][:300]}") from None
    meta = {
        "format": "onnx",
        "profile": profile.name,
        "method": m.name,
        "params": m.params,
        "streaming": streaming,
        "dynamic_time": dynamic_time,
        "dynamic_batch": not streaming and dynamic_time,
        "buffer": block,
        "state": [{"buffer": n, "shape": list(s.shape), "dtype": _dtype_name(s)} for n, s in state],
        "spec": spec.to_json(),
        "checkpoint": loaded.checkpoint,
        "checkpoint_meta": loaded.envelope_meta,
        "opset": profile.opset,
        "ir_version": model.ir_version,
        "torch": torch.__version__,
        "stft_as_convolution": fft_free,
        "layer_norm_decomposed": norm_free,
        "allow_ops": sorted(allow_ops),
    }
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    Path(out).write_bytes(model.SerializeToString())
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}
