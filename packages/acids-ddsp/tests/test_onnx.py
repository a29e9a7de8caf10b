"""ONNX export of the streaming nn~ wrapper, the state as explicit inputs/outputs, run in onnxruntime.

This is what acids-export does (reference/deploy-and-export.md): torch's TorchScript-based exporter at
opset 17 (the dynamo exporter needs onnxscript and starts at opset 18), the state buffers found by running
one block and zero-filled for a fresh stream. Checked here without importing acids-export: the graph has
only float32 state, none of the operators the Jetson runtimes lack, and streamed in onnxruntime at two
block sizes (a dynamic-length graph) it equals the eager offline model.
"""

import io
import warnings

import numpy as np
import pytest
import torch
from conftest import random_controls
from torch import nn

from acids_ddsp.config import preset
from acids_ddsp.export import exportable
from acids_ddsp.model import DDSP

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FORBIDDEN = {"DFT", "STFT", "Mod", "BitwiseAnd", "BitwiseXor", "BitwiseOr", "BitShift", "HannWindow"}


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


class ExplicitState(nn.Module):
    """``(x, *state) -> (y, *new_state)`` around the stateful wrapper (acids-export's trace wrapper)."""

    def __init__(self, module: nn.Module, names: list[str], method: str = "forward") -> None:
        super().__init__()
        self.inner = module
        self.names = names
        self.method = method

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        owners = [_owner(self.inner, n) for n in self.names]
        for (mod, attr), s in zip(owners, states, strict=True):
            mod._buffers[attr] = s
        y = getattr(self.inner, self.method)(x)
        return (y, *[mod._buffers[attr] for mod, attr in owners])


def _state_buffers(
    module: nn.Module, x: torch.Tensor, method: str = "forward"
) -> list[tuple[str, torch.Tensor]]:
    before = {n: b for n, b in module.named_buffers()}
    with torch.no_grad():
        getattr(module, method)(x)
    return [(n, torch.zeros_like(b)) for n, b in module.named_buffers() if b is not before[n]]


def _onnx_stream(module: nn.Module, method: str, x: torch.Tensor, trace_len: int, sizes: tuple[int, ...]):
    """Export ``method`` with explicit state (traced on ``trace_len`` steps of ``x``), check the graph, and
    run ``x`` through onnxruntime in blocks of each of ``sizes``: a list of the streamed outputs."""
    state = _state_buffers(module, x[..., :trace_len], method)
    assert state and all(s.dtype == torch.float32 for _, s in state), [(n, s.dtype) for n, s in state]
    wrapper = ExplicitState(module, [n for n, _ in state], method)
    inputs = ["x"] + [f"state_in.{i}" for i in range(len(state))]
    outputs = ["y"] + [f"state_out.{i}" for i in range(len(state))]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (x[..., :trace_len], *[s for _, s in state]),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={"x": {2: "steps_in"}, "y": {2: "steps_out"}},
        )
    graph = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(graph, full_check=True)
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & FORBIDDEN, ops & FORBIDDEN
    for value in [*graph.graph.input, *graph.graph.output]:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, value.name
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    results = []
    for size in sizes:
        states = [s.numpy() for _, s in state]
        pieces = []
        for c in x.split(size, dim=-1):
            out = session.run(None, {"x": c.numpy(), **{f"state_in.{i}": s for i, s in enumerate(states)}})
            pieces.append(out[0])
            states = out[1:]
        results.append(np.concatenate(pieces, axis=-1))
    return results


def test_autoencoder_encode_and_decode_export_to_onnx():
    """tiny-ae's nn~ encode (audio -> z) and decode (f0, loudness, z -> audio), streamed in onnxruntime."""
    torch.manual_seed(0)
    model = DDSP(preset("tiny-ae")).eval()
    hop, frames = model.hop, 96
    f0, loudness = random_controls(1, frames)
    audio = 0.1 * torch.randn(1, 1, frames * hop)
    with torch.no_grad():
        z = model.encode(audio).transpose(1, 2)  # (1, z_dim, F)
        offline = model(f0, loudness, audio)[0].numpy()
    for z_streamed in _onnx_stream(exportable(model), "encode", audio, 8 * hop, (8 * hop, 32 * hop)):
        np.testing.assert_allclose(z_streamed, z.numpy(), atol=2e-5, rtol=1e-4)
    x = torch.cat([f0, loudness, z], dim=1)
    for y in _onnx_stream(exportable(model), "decode", x, 8, (8, 32)):
        np.testing.assert_allclose(y[0], offline, atol=2e-5, rtol=1e-4)


def test_streaming_onnx_matches_eager_offline():
    torch.manual_seed(0)
    model = DDSP(preset("tiny")).eval()
    hop = model.hop
    f0, loudness = random_controls(1, 96)
    x = torch.cat([f0, loudness], dim=1)  # (1, 2, F)
    with torch.no_grad():
        offline = model(f0, loudness)[0, 0].numpy()
    # traced at 8 frames, streamed at 8 and 32: the graph's length is really dynamic
    for streamed in _onnx_stream(exportable(model), "forward", x, 8, (8, 32)):
        assert streamed.shape == (1, 1, 96 * hop)
        np.testing.assert_allclose(streamed[0, 0], offline, atol=2e-5, rtol=1e-4)
