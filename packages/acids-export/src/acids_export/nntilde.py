"""The nn~ interface around an exportable module, as reference/nntilde.md §1 specifies it.

The wrapper is generated as Python source (method names come from the model's io spec, and TorchScript
needs one real method per name), registered in :mod:`linecache` so ``torch.jit.script`` can read it, then
scripted. It provides, for every method ``m`` of the spec:

- the method itself (one Tensor in, one Tensor out), ``m_params`` (int64 ``[in_ch, in_ratio, out_ch,
  out_ratio]``), ``m_input_labels`` / ``m_output_labels`` (List[str]);

and ``get_methods``, ``get_attributes``, ``get_buffer_attributes``, ``is_buffer_empty``,
``get_sample_rate`` (the model's rate, set explicitly: nn~ never calls ``set_sample_rate`` on a first load,
bug P4), ``set_sample_rate(int) -> int``; for every attribute ``a``: ``a_params`` (type ids),
``get_a()`` returning a tuple (a plain scalar breaks nn~'s getter) and ``set_a(...) -> int`` returning 0.
"""

from __future__ import annotations

import itertools
import linecache
import sys
import types
from typing import Any

import torch
from torch import nn

from acids_export.registry import ExportSpec

_TS_TYPES = {bool: "bool", int: "int", float: "float", str: "str"}
_counter = itertools.count()


def _ident(name: str) -> str:
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"'{name}' is not a usable method or attribute name")
    return name


def generate_source(spec: ExportSpec, class_name: str = "NnTildeModule") -> str:
    """The Python source of the wrapper class for ``spec`` (scriptable)."""
    lines = [
        "import torch",
        "from typing import List, Tuple",
        "",
        f"class {class_name}(torch.nn.Module):",
        "    sr: int",
        "    host_sr: int",
        "    _methods: List[str]",
        "    _attributes: List[str]",
        "    _buffer_attributes: List[str]",
        "",
        "    def __init__(self, model: torch.nn.Module, init: dict):",
        "        super().__init__()",
        "        self.model = model",
        "        for k, v in init['buffers'].items():",
        "            self.register_buffer(k, v)",
        "        for k, v in init['attrs'].items():",
        "            setattr(self, k, v)",
        "",
    ]
    for m in spec.methods:
        name = _ident(m.name)
        call = "self.model(x)" if name == "forward" else f"self.model.{name}(x)"
        deco = [] if name == "forward" else ["    @torch.jit.export"]
        lines += [
            *deco,
            f"    def {name}(self, x: torch.Tensor) -> torch.Tensor:",
            f"        return {call}",
            "",
        ]
    for a in spec.attributes:
        name = _ident(a.name)
        types = [_TS_TYPES[type(v)] for v in a.default]
        args = ", ".join(f"v{i}: {t}" for i, t in enumerate(types))
        vals = ", ".join(f"v{i}" for i in range(len(types)))
        tup = f"({vals},)" if len(types) == 1 else f"({vals})"
        lines += [
            "    @torch.jit.export",
            f"    def get_{name}(self) -> Tuple[{', '.join(types)}]:",
            f"        return self._attr_{name}",
            "",
            "    @torch.jit.export",
            f"    def set_{name}(self, {args}) -> int:",
            f"        self.model.set_{name}({vals})",
            f"        self._attr_{name} = {tup}",
            "        return 0",
            "",
        ]
    lines += [
        "    @torch.jit.export",
        "    def get_methods(self) -> List[str]:",
        "        return self._methods",
        "",
        "    @torch.jit.export",
        "    def get_attributes(self) -> List[str]:",
        "        return self._attributes",
        "",
        "    @torch.jit.export",
        "    def get_buffer_attributes(self) -> List[str]:",
        "        return self._buffer_attributes",
        "",
        "    @torch.jit.export",
        "    def is_buffer_empty(self) -> bool:",
        "        return True",
        "",
        "    @torch.jit.export",
        "    def get_sample_rate(self) -> int:",
        "        return self.sr",
        "",
        "    @torch.jit.export",
        "    def set_sample_rate(self, sr: int) -> int:",
        "        # the model runs at its own rate; the host's rate is only recorded",
        "        self.host_sr = sr",
        "        return 0",
        "",
    ]
    return "\n".join(lines) + "\n"


def _compile_class(source: str, class_name: str) -> type:
    filename = f"<acids-export-nntilde-{next(_counter)}>"
    # torch.jit.script reads class source through inspect/linecache: make it findable
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    # a real module in sys.modules: TorchScript resolves names through the class's module
    mod = types.ModuleType(f"acids_export._generated_{next(_counter)}")
    mod.__file__ = filename
    sys.modules[mod.__name__] = mod
    exec(compile(source, filename, "exec", dont_inherit=True), mod.__dict__)
    return getattr(mod, class_name)


def wrap(module: nn.Module, spec: ExportSpec) -> nn.Module:
    """The eager nn~ wrapper of ``module`` (script it with :func:`acids_export.torchscript.script`)."""
    cls = _compile_class(generate_source(spec), "NnTildeModule")
    buffers = {}
    attrs: dict[str, Any] = {
        "sr": int(spec.sample_rate),
        "host_sr": -1,
        "_methods": [m.name for m in spec.methods],
        "_attributes": [a.name for a in spec.attributes],
        "_buffer_attributes": [],
    }
    for m in spec.methods:
        buffers[f"{m.name}_params"] = torch.tensor(m.params, dtype=torch.long)
        ins, outs = m.labels()
        attrs[f"{m.name}_input_labels"] = ins
        attrs[f"{m.name}_output_labels"] = outs
    for a in spec.attributes:
        buffers[f"{a.name}_params"] = torch.tensor(a.type_ids, dtype=torch.long)
        attrs[f"_attr_{a.name}"] = tuple(a.default)
    wrapper = cls(module, {"buffers": buffers, "attrs": attrs}).eval()
    for a in spec.attributes:  # apply the defaults so the model and the getters agree
        getattr(wrapper, f"set_{a.name}")(*a.default)
    return wrapper
