"""The exportable contract and its discovery through the ``acids.exportables`` entry point group.

A model package registers one callable per family (``rave = "acids_rave.export:exportable"``). acids-export
never imports a model package by name: it reads a checkpoint's ``format`` (``acids-rave``), strips the
``acids-`` prefix and loads the entry point of that name.

**The contract** (what a model package provides; nothing here needs importing acids-export):

``exportable(checkpoint_path, *, streaming: bool = True) -> torch.nn.Module`` returning a module that

1. is in eval mode, scriptable with ``torch.jit.script`` and traceable with ``torch.jit.trace``;
2. has one method per entry of its io spec (``forward`` is ``module(x)``), each taking one float32
   ``(B, in_channels, T / in_ratio)`` tensor and returning one ``(B, out_channels, T / out_ratio)`` tensor;
3. has ``io_spec() -> dict`` (``@torch.jit.ignore``) with ``methods`` — ``{name: [in_ch, in_ratio, out_ch,
   out_ratio]}`` or ``{name: {"params": [...], "input_labels": [...], "output_labels": [...]}}`` —,
   ``sample_rate`` (int), ``streaming`` (bool), optionally ``latency_samples`` and ``attributes``
   (``{name: {"default": [v, ...]}}``, each with a scriptable ``set_<name>(v, ...) -> None`` on the module);
4. when streaming, keeps its state in registered buffers that are *reassigned* (``self.cache = ...``), never
   mutated in place, and where a zero-filled state of the materialised shape equals a fresh stream.
   acids-export finds these buffers by running one block, and makes them explicit ONNX inputs/outputs.

Optional, so that ``check`` runs a method on realistic inputs (:mod:`acids_export.inputs`):

5. a method whose input is not audio declares what each input channel carries, ``"inputs": [feature, ...]``
   in its dict form, each one of :data:`CONTROL_FEATURES` (``f0_hz``, ``loudness_db``, ...); acids-export
   computes them from real audio with ``acids_data.features`` at the method's ``in_ratio``. Without it,
   channel labels naming f0/pitch or loudness are read the same way (the fallback);
6. ``example_inputs(audio, sample_rate) -> {method: (1, in_ch, T / in_ratio) tensor}`` (``@torch.jit.ignore``)
   on the module: the model makes its own inputs from mono float32 ``audio`` at its ``sample_rate`` (a model
   with its own feature settings, units or normalisation). It wins over 5 for the methods it returns.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acids_core.errors import DataError, MissingInput, UsageError

log = logging.getLogger(__name__)

GROUP = "acids.exportables"
#: type ids of nn~ attribute values (nn_tilde: 0=bool, 1=int, 2=float, 3=str)
ATTRIBUTE_TYPE_IDS = {bool: 0, int: 1, float: 2, str: 3}
#: what a control input channel may carry (io spec ``"inputs"``), computed from audio by acids-export:
#: f0 in Hz and its voicing confidence (swift-f0), A-weighted loudness in dB, the audio itself (decimated)
CONTROL_FEATURES = ("f0_hz", "f0_confidence", "loudness_db", "audio")

_extra: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class MethodSpec:
    """One nn~ method: ``(B, in_channels, T / in_ratio) -> (B, out_channels, T / out_ratio)``."""

    name: str
    in_channels: int
    in_ratio: int
    out_channels: int
    out_ratio: int
    input_labels: tuple[str, ...] = ()
    output_labels: tuple[str, ...] = ()
    input_features: tuple[str, ...] = ()  # one of CONTROL_FEATURES per input channel, when declared

    @property
    def params(self) -> list[int]:
        return [self.in_channels, self.in_ratio, self.out_channels, self.out_ratio]

    def labels(self) -> tuple[list[str], list[str]]:
        """Input and output labels, one per channel (generated where the model gave none)."""
        ins = list(self.input_labels) or [f"(signal) {self.name} in {i}" for i in range(self.in_channels)]
        outs = list(self.output_labels) or [f"(signal) {self.name} out {i}" for i in range(self.out_channels)]
        return ins, outs


@dataclass(frozen=True)
class AttributeSpec:
    """A settable nn~ attribute; the module has ``set_<name>(*default-typed values) -> None``."""

    name: str
    default: tuple[bool | int | float | str, ...]

    @property
    def type_ids(self) -> list[int]:
        return [ATTRIBUTE_TYPE_IDS[type(v)] for v in self.default]


@dataclass(frozen=True)
class ExportSpec:
    """What an exportable module declares (see the module docstring)."""

    family: str
    sample_rate: int
    methods: tuple[MethodSpec, ...]
    attributes: tuple[AttributeSpec, ...] = ()
    streaming: bool = False
    latency_samples: int = 0
    #: weight precision the exportable was built at ("fp32", or an opt-in "bf16"/"int8")
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise DataError(f"{self.family} has no method '{name}' (it has {[m.name for m in self.methods]})")

    @property
    def higher_ratio(self) -> int:
        return max(max(m.in_ratio, m.out_ratio) for m in self.methods)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "sample_rate": self.sample_rate,
            "streaming": self.streaming,
            "latency_samples": self.latency_samples,
            "precision": self.precision,
            "methods": {m.name: m.params for m in self.methods},
            "attributes": {a.name: list(a.default) for a in self.attributes},
            "labels": {m.name: [list(m.input_labels), list(m.output_labels)] for m in self.methods},
            "inputs": {m.name: list(m.input_features) for m in self.methods if m.input_features},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExportSpec:
        """The spec an artifact's metadata stores (:meth:`to_json`); older files lack labels and inputs."""
        labels, inputs = d.get("labels") or {}, d.get("inputs") or {}
        methods = []
        for name, params in dict(d.get("methods") or {}).items():
            ins, outs = labels.get(name, [[], []])
            methods.append(
                MethodSpec(
                    str(name), *[int(v) for v in params], tuple(ins), tuple(outs), tuple(inputs.get(name, ()))
                )
            )
        return cls(
            family=str(d.get("family", "?")),
            sample_rate=int(d.get("sample_rate", 1)),
            methods=tuple(methods),
            streaming=bool(d.get("streaming", False)),
            latency_samples=int(d.get("latency_samples") or 0),
            precision=str(d.get("precision") or "fp32"),
        )

    @classmethod
    def from_io_spec(cls, family: str, io: dict[str, Any]) -> ExportSpec:
        """Parse a model's ``io_spec()`` dict; a malformed one is a DataError naming the field."""
        try:
            methods = []
            for name, m in dict(io["methods"]).items():
                if isinstance(m, dict):
                    params, ins, outs = m["params"], m.get("input_labels", ()), m.get("output_labels", ())
                    features = tuple(map(str, m.get("inputs") or ()))
                else:
                    params, ins, outs, features = m, (), (), ()
                p = [int(v) for v in params]
                if len(p) != 4 or min(p) < 1:
                    raise ValueError(f"method {name}: params must be 4 positive ints, got {p}")
                if features and len(features) != p[0]:
                    raise ValueError(f"method {name}: {len(features)} inputs for {p[0]} input channels")
                bad = [f for f in features if f not in CONTROL_FEATURES]
                if bad:
                    raise ValueError(f"method {name}: unknown inputs {bad} (known: {list(CONTROL_FEATURES)})")
                methods.append(
                    MethodSpec(str(name), *p, tuple(map(str, ins)), tuple(map(str, outs)), features)
                )
            attributes = []
            for name, a in dict(io.get("attributes") or {}).items():
                default = a["default"] if isinstance(a, dict) else a
                default = tuple(default) if isinstance(default, (list, tuple)) else (default,)
                for v in default:
                    if type(v) not in ATTRIBUTE_TYPE_IDS:
                        raise ValueError(f"attribute {name}: values must be bool/int/float/str, got {v!r}")
                attributes.append(AttributeSpec(str(name), default))
            known = {"methods", "attributes", "sample_rate", "streaming", "latency_samples", "precision"}
            return cls(
                family=family,
                sample_rate=int(io["sample_rate"]),
                methods=tuple(methods),
                attributes=tuple(attributes),
                streaming=bool(io.get("streaming", False)),
                latency_samples=int(io.get("latency_samples") or 0),
                precision=str(io.get("precision") or "fp32"),
                extra={k: v for k, v in io.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{family}: bad io_spec from its exportable ({e})") from None


def register(name: str, factory: Callable[..., Any]) -> None:
    """Register an exportable in this process (tests; packages use the entry point group)."""
    _extra[name] = factory


def unregister(name: str) -> None:
    _extra.pop(name, None)


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``acids.exportables`` entry points by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def available() -> list[dict[str, str]]:
    """One row per installed exportable: name, target (module:attr), distribution."""
    rows = []
    for name, ep in sorted(entry_points().items()):
        dist = getattr(ep, "dist", None)
        rows.append(
            {
                "name": name,
                "target": ep.value,
                "package": f"{dist.name} {dist.version}" if dist is not None else "?",
            }
        )
    rows += [{"name": n, "target": repr(f), "package": "(in-process)"} for n, f in sorted(_extra.items())]
    return rows


def family_of(fmt: str) -> str:
    """Checkpoint format -> exportable name: ``acids-rave`` -> ``rave``."""
    return fmt.removeprefix("acids-")


def get(name: str) -> Callable[..., Any]:
    """The exportable factory of a family, or a DataError listing what is installed."""
    if name in _extra:
        return _extra[name]
    eps = entry_points()
    if name not in eps:
        have = sorted([*eps, *_extra]) or ["none"]
        raise DataError(
            f"no exportable '{name}' is installed (installed: {', '.join(have)}); "
            f"install the model package that registers it under '{GROUP}'"
        )
    try:
        return eps[name].load()
    except Exception as e:  # a broken plugin must not look like a crash of acids-export
        raise DataError(f"exportable '{name}' ({eps[name].value}) failed to import: {e}") from None


@dataclass
class Loaded:
    """A checkpoint turned into an exportable module."""

    module: Any
    spec: ExportSpec
    checkpoint: str
    family: str
    envelope_meta: dict[str, Any]


def _keywords(factory: Callable[..., Any]) -> set[str]:
    """Keyword names a factory accepts (every name when it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"precision"}
    return {p.name for p in params}


def load(path: str | os.PathLike[str], *, streaming: bool = True, precision: str = "fp32") -> Loaded:
    """Load a checkpoint through its family's exportable.

    ``precision`` other than "fp32" is passed to the factory as ``precision=`` (an opt-in of the
    family, e.g. acids-rave's bf16 or acids-ddsp's bf16/int8 weights); fp32 calls it without, as every
    factory accepts.

    Raises:
        MissingInput (66): no such file. DataError (65): not a checkpoint, unknown family, bad module.
        UsageError (2): the family has no such precision.
    """
    from acids_core.checkpoint import load_checkpoint

    p = os.fspath(path)
    if not os.path.exists(p):
        raise MissingInput(f"{p}: no such checkpoint file")
    env = load_checkpoint(p)
    family = family_of(str(env["format"]))
    factory = get(family)
    options: dict[str, Any] = {} if precision == "fp32" else {"precision": precision}
    if options and "precision" not in _keywords(factory):
        raise UsageError(f"the '{family}' exportable has no precision option (only fp32)")
    try:
        module = factory(p, streaming=streaming, **options)
    except (DataError, MissingInput):
        raise
    except ValueError as e:
        if options:  # the family refused this precision: a user choice, one line
            raise UsageError(f"the '{family}' exportable refused precision {precision!r}: {e}") from None
        raise DataError(f"{p}: the '{family}' exportable could not build a module ({e})") from None
    except Exception as e:
        raise DataError(f"{p}: the '{family}' exportable could not build a module ({e})") from None
    io = getattr(module, "io_spec", None)
    if io is None:
        raise DataError(f"{p}: the '{family}' exportable returned a module without io_spec()")
    spec = ExportSpec.from_io_spec(family, io())
    for m in spec.methods:
        if m.name != "forward" and not callable(getattr(module, m.name, None)):
            raise DataError(f"{p}: io_spec declares method '{m.name}' that the module does not have")
    meta = {k: env.get(k) for k in ("format", "format_version", "package", "package_version", "created")}
    log.debug("loaded %s (%s) with methods %s", p, family, [m.name for m in spec.methods])
    return Loaded(
        module=module.eval(), spec=spec, checkpoint=os.path.abspath(p), family=family, envelope_meta=meta
    )
