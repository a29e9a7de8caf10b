"""The ``torch.export`` route: one method as an ``ExportedProgram`` (``.pt2``), for hosts after TorchScript.

torch >= 2.11 deprecates TorchScript; nn~ still needs it, so :mod:`acids_export.torchscript` stays the nn~
path and this module keeps the successor working. As in ONNX, a streaming method's state is explicit:
the program is ``(x, *state) -> (y, *new_state)`` (``torch.export`` does not track reassigned buffers).
The time axis is ``Dim.AUTO``: dynamic where the model allows it, specialised to the buffer where it does
not (recurrent layers unroll), which the returned metadata reports.

Scalar (0-d) buffers that are not streaming state are folded into constants while exporting: ``torch.export``
lifts buffers to graph inputs, so Python control flow on their value (RAVE's ``if float(self.noise_gain) > 0``
in its decoder) is a guard on data it cannot resolve ("Could not guard on data-dependent expression"). As
constants, the branch is taken at export time exactly as eager PyTorch takes it with the checkpoint's values.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from acids_core.errors import DataError
from acids_export.onnx import _dtype_name, _ExplicitState, _Method, _owner, find_state
from acids_export.quiet import captured, short_reason
from acids_export.registry import Loaded

META_FILE = "acids_export.json"

log = logging.getLogger(__name__)


def export_program(
    loaded: Loaded, out: str | Path, *, method: str | None = None, buffer: int = 4096
) -> dict[str, Any]:
    """Export one method of ``loaded`` to ``out`` (.pt2); return its description."""
    spec = loaded.spec
    names = [m.name for m in spec.methods]
    m = spec.method(method or ("forward" if "forward" in names else names[0]))
    module = loaded.module
    block = max(buffer, m.in_ratio, m.out_ratio)
    state = find_state(module, m, block) if spec.streaming else []
    x = torch.zeros(1, m.in_channels, block // m.in_ratio)
    saved = [(*_owner(module, n), module.get_buffer(n)) for n, _ in state]
    folded = _fold_scalar_buffers(module, {n for n, _ in state})
    if state:
        wrapper: torch.nn.Module = _ExplicitState(module, m.name, [n for n, _ in state])
        args: tuple[torch.Tensor, ...] = (x, *[s for _, s in state])
        dynamic: Any = ({2: torch.export.Dim.AUTO}, tuple(None for _ in state))  # *states is one arg
    else:
        wrapper = _Method(module, m.name)
        args = (x,)
        dynamic = ({0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO},)
    try:
        with captured():
            program = torch.export.export(wrapper, args, dynamic_shapes=dynamic, strict=False)
    except Exception as e:
        log.debug("torch.export failed: %s", e)
        raise DataError(f"{m.name} does not torch.export: {short_reason(e)} (details: -v)") from None
    finally:
        for mod, attr, value in saved:
            mod._buffers[attr] = value
        for mod, attr, value in folded:
            delattr(mod, attr)
            mod._buffers[attr] = value
    x_shape = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == x_shape)
    dynamic_time = not isinstance(node.meta["val"].shape[2], int)
    if not dynamic_time:
        log.warning("%s: torch.export specialised the time axis to %d frames", m.name, block // m.in_ratio)
    meta = {
        "format": "torch.export",
        "method": m.name,
        "params": m.params,
        "streaming": spec.streaming,
        "state": [{"buffer": n, "shape": list(s.shape), "dtype": _dtype_name(s)} for n, s in state],
        "dynamic_time": dynamic_time,
        "buffer": block,
        "spec": spec.to_json(),
        "checkpoint": loaded.checkpoint,
        "checkpoint_meta": loaded.envelope_meta,
        "torch": torch.__version__,
    }
    with warnings.catch_warnings():  # tied weights (GRU) share storage: harmless on CPU
        warnings.filterwarnings("ignore", message=r"No complete tensor found")
        torch.export.save(program, str(out), extra_files={META_FILE: json.dumps(meta)})
    return meta


def _fold_scalar_buffers(module: torch.nn.Module, state: set[str]) -> list[tuple[torch.nn.Module, str, Any]]:
    """Turn the 0-d buffers outside ``state`` into plain tensor attributes; return what to restore."""
    folded = []
    for name, buf in list(module.named_buffers()):
        if name in state or buf.dim() != 0:
            continue
        mod, attr = _owner(module, name)
        del mod._buffers[attr]
        object.__setattr__(mod, attr, buf)  # a constant of the program, not a lifted input
        folded.append((mod, attr, buf))
    if folded:
        log.debug(
            "folded scalar buffers into constants: %s", [f"{type(m).__name__}.{a}" for m, a, _ in folded]
        )
    return folded


def read_meta(path: str | Path) -> dict[str, Any]:
    """The acids-export metadata saved in a .pt2 file ({} when absent)."""
    extra = {META_FILE: ""}
    load(path, extra_files=extra)
    return json.loads(extra[META_FILE]) if extra[META_FILE] else {}


def load(path: str | Path, extra_files: dict[str, str] | None = None) -> Any:
    """The program's callable module; DataError when the file is not a loadable .pt2."""
    try:
        with warnings.catch_warnings():  # tied weights (GRU, weight norm) share storage: harmless on CPU
            warnings.filterwarnings("ignore", message=r"No complete tensor found")
            with open(
                path, "rb"
            ) as f:  # a file object: torch wants a .pt2 suffix on names (temp files lack it)
                return torch.export.load(f, extra_files=extra_files).module()
    except Exception as e:
        raise DataError(f"{path}: not a loadable torch.export file ({short_reason(e)})") from None
