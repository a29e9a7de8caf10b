"""``acids-export check``: reload an artifact in its runtime and measure it against eager PyTorch.

For each method (TorchScript: all of them; ONNX: the exported one) on real audio:

- declared shapes and ratios: a buffer of ``B`` samples gives ``(nb, out_ch, B / out_ratio)`` float32,
  batch 1 and 2 (TorchScript), nn~'s attribute getters return tuples and setters return 0;
- ``max_abs_error`` / ``spectral_distance_db``: the artifact vs the eager module, run the same way;
- ``stream_vs_offline``: the artifact block by block (streaming exports) vs eager offline on the whole signal;
- ``rtf`` / ``eager_rtf``: seconds of compute per second of audio at buffer ``B`` on 1 thread, the median
  over ``rtf_timed_calls`` buffers after ``rtf_warmup_calls`` untimed ones on a fresh instance (the first
  call, alone, is ``first_call_rtf``: TorchScript's profiling executor and onnxruntime's allocations make
  it an outlier), with ``rtf_p90``.

Inputs are real audio resampled to the model's rate, or control features (f0, loudness) computed from it
(:mod:`acids_export.inputs`); ``figures.inputs`` says which, per method.

A failed check raises :class:`~acids_core.errors.DataError` with the figures that failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acids_core.errors import DataError, MissingInput
from acids_export import registry
from acids_export.inputs import (
    DEFAULT_RTF_CALLS,
    DEFAULT_WARMUP,
    load_audio,
    method_inputs,
    time_calls,
)
from acids_export.registry import ExportSpec, MethodSpec

__all__ = [
    "check",
    "detect_format",
    "find_audio",
    "load_audio",
    "method_inputs",
    "sha256",
    "spectral_distance_db",
]

log = logging.getLogger(__name__)

AUDIO_ENV = "ACIDS_EXPORT_AUDIO"
DEFAULT_ATOL = 1e-3
DEFAULT_SPECTRAL_DB = 0.1


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_audio() -> str | None:
    """$ACIDS_EXPORT_AUDIO, else the repository's assets/demo-audio (a source checkout), else None."""
    env = os.environ.get(AUDIO_ENV)
    if env:
        return env
    for parent in Path(__file__).resolve().parents:
        demo = parent / "assets" / "demo-audio"
        if demo.is_dir():
            files = sorted(demo.glob("*.flac")) + sorted(demo.glob("*.wav"))
            if files:
                return str(files[0])
    return None


def spectral_distance_db(a: np.ndarray, b: np.ndarray, n_fft: int = 1024) -> float:
    """Mean absolute difference of log-magnitude spectra (dB, floored 80 dB below the peak), Hann frames."""
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    if len(a) < n_fft:
        n_fft = 1 << int(np.log2(max(len(a), 2)))
    hop, win = n_fft // 2, np.hanning(n_fft)
    frames = range(0, len(a) - n_fft + 1, hop)
    sa = np.abs(np.fft.rfft(np.stack([a[i : i + n_fft] * win for i in frames]), axis=-1))
    sb = np.abs(np.fft.rfft(np.stack([b[i : i + n_fft] * win for i in frames]), axis=-1))
    floor = max(sa.max(), sb.max(), 1e-9) * 1e-4  # -80 dB below the peak: ignore the numerical noise floor
    return float(np.mean(np.abs(20 * np.log10(sa + floor) - 20 * np.log10(sb + floor))))


def _call(module: Any, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return module if name == "forward" else getattr(module, name)


def run_blocks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, block: int
) -> tuple[torch.Tensor, list[float]]:
    """Call ``fn`` on consecutive ``block``-frame slices of ``x``; (concatenated output, seconds per call)."""
    outs, times = [], []
    with torch.inference_mode():
        for i in range(0, x.shape[-1], block):
            t = time.perf_counter()
            outs.append(fn(x[..., i : i + block]))
            times.append(time.perf_counter() - t)
    return torch.cat(outs, -1), times


def _timed(
    fig: dict[str, Any], prefix: str, fn: Callable[[torch.Tensor], Any], x: torch.Tensor, block: int,
    buffer: int, sr: int, timing: tuple[int, int],
) -> None:  # fmt: skip
    """RTF figures of ``fn`` (a fresh instance: warm-up changes its state) into ``fig``, keys ``prefix*``."""
    blocks = [b for b in x.split(block, dim=-1) if b.shape[-1] == block] or [x[..., :block]]
    t = time_calls(fn, blocks, buffer / sr, warmup=timing[0], calls=timing[1])
    fig[f"{prefix}rtf"] = t["rtf"]
    fig[f"{prefix}rtf_p90"] = t["rtf_p90"]
    fig[f"{prefix}first_call_rtf"] = t["first_call_rtf"]
    if not prefix:
        fig["rtf_warmup_calls"], fig["rtf_timed_calls"] = t["warmup_calls"], t["timed_calls"]


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise MissingInput(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not an artifact")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            if any(n.rsplit("/", 1)[-1] == "archive_format" for n in z.namelist()):
                return "torch.export"
        return "torchscript"
    with open(p, "rb") as f:
        head = f.read(64)
    if head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint
        return "onnx"
    raise DataError(f"{p}: neither a TorchScript archive nor an ONNX model")


def _eager(checkpoint: str | None, streaming: bool, precision: str = "fp32") -> registry.Loaded | None:
    """The eager reference at the artifact's weight precision (a bf16/int8 file is compared with the same)."""
    if not checkpoint or not os.path.exists(checkpoint):
        return None
    return registry.load(checkpoint, streaming=streaming, precision=precision)


def _input_spec(file_spec: ExportSpec, offline: registry.Loaded | None) -> ExportSpec:
    """The file's methods with the eager model's labels and declared inputs where it has them."""
    if offline is None:
        return file_spec
    known = {m.name: m for m in offline.spec.methods}
    methods = tuple(
        known.get(m.name, m) if known.get(m.name, m).params == m.params else m for m in file_spec.methods
    )
    return ExportSpec(family=file_spec.family, sample_rate=file_spec.sample_rate, methods=methods)


class _Figures:
    """Collects per-method figures and failures."""

    def __init__(self, atol: float, spectral_db: float):
        self.atol, self.spectral_db = atol, spectral_db
        self.methods: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []

    def shape(self, name: str, y: Any, want: tuple[int, ...]) -> None:
        shape = tuple(y.shape)
        dtype = str(getattr(y, "dtype", ""))
        if shape != want:
            self.failures.append(f"{name}: output {shape}, declared {want}")
        elif "float32" not in dtype:
            self.failures.append(f"{name}: output dtype {dtype}, nn~ needs float32")

    def compare(
        self, name: str, key: str, got: torch.Tensor, ref: torch.Tensor | None, audio_rate: bool
    ) -> None:
        fig = self.methods.setdefault(name, {})
        if not torch.isfinite(got).all():
            self.failures.append(f"{name}: NaN or Inf in the output")
            return
        if ref is None:
            return
        n = min(got.shape[-1], ref.shape[-1])
        err = float((got[..., :n] - ref[..., :n]).abs().max())
        fig[key] = err
        if err > self.atol:
            self.failures.append(f"{name}: {key} {err:.3g} > {self.atol:g}")
        if audio_rate and key == "max_abs_error":
            d = spectral_distance_db(got[..., :n].numpy(), ref[..., :n].numpy())
            fig["spectral_distance_db"] = d
            if d > self.spectral_db:
                self.failures.append(f"{name}: spectral distance {d:.3g} dB > {self.spectral_db:g}")


def check(
    path: str | Path,
    *,
    profile: str | None = None,
    audio: str | None = None,
    checkpoint: str | None = None,
    buffer: int | None = None,
    blocks: int = 8,
    atol: float = DEFAULT_ATOL,
    spectral_db: float = DEFAULT_SPECTRAL_DB,
    warmup: int = DEFAULT_WARMUP,
    rtf_calls: int = DEFAULT_RTF_CALLS,
) -> dict[str, Any]:
    """Verify an artifact; return the fields of its ``artifact`` record. DataError when it fails.

    ``warmup`` untimed calls, then ``rtf_calls`` timed ones, per runtime and method (:func:`time_calls`).
    """
    fmt = detect_format(path)
    torch.set_num_threads(1)
    opts = _Options(audio, checkpoint, blocks, atol, spectral_db, (warmup, rtf_calls))
    if fmt == "torchscript":
        from acids_export.torchscript import read_meta

        result = _check_torchscript(path, read_meta(path), buffer or 4096, opts)
    elif fmt == "torch.export":
        from acids_export.torch_export import read_meta

        result = _check_pt2(path, read_meta(path), buffer, opts)
    else:
        from acids_export.onnx import read_meta

        result = _check_onnx(path, read_meta(path), profile, buffer, opts)
    return {
        "format": fmt,
        "path": os.path.abspath(path),
        "sha256": sha256(path),
        "bytes": os.path.getsize(path),
        **result,
    }


@dataclass(frozen=True)
class _Options:
    audio: str | None
    checkpoint: str | None
    blocks: int
    atol: float
    spectral_db: float
    timing: tuple[int, int]  # (warm-up calls, timed calls)


def _figures_record(audio_name: str, buffer: int, eager: Any, figs: _Figures, sources: dict) -> dict:
    return {
        "audio": audio_name,
        "inputs": sources,
        "buffer": buffer,
        "threads": 1,
        "eager_reference": eager is not None,
        "methods": figs.methods,
    }


def _check_torchscript(path, meta, buffer, opts: _Options) -> dict[str, Any]:
    from acids_export.torchscript import hazards, load

    figs = _Figures(opts.atol, opts.spectral_db)
    m = load(path)
    try:
        names = list(m.get_methods())
    except Exception:
        names = [n for n in ("forward", "encode", "decode") if hasattr(m, f"{n}_params")]
    spec_meta = meta.get("spec", {})
    meta_methods = {mm.name: mm for mm in ExportSpec.from_json(spec_meta).methods} if spec_meta else {}
    methods = []
    for n in names:
        p = getattr(m, f"{n}_params", None)
        if p is None or p.numel() < 4:
            figs.failures.append(f"{n}: no usable {n}_params")
            continue
        mm = MethodSpec(n, *[int(v) for v in p[:4]])
        known = meta_methods.get(n)
        if known is not None and known.params == mm.params:
            mm = known
        elif hasattr(m, f"{n}_input_labels"):  # a file from elsewhere: its labels
            mm = MethodSpec(n, *mm.params, tuple(getattr(m, f"{n}_input_labels")))
        methods.append(mm)
    sr = int(m.get_sample_rate()) if hasattr(m, "get_sample_rate") else -1
    if sr <= 0:
        figs.failures.append(
            f"get_sample_rate() is {sr}: nn~ never calls set_sample_rate on a first load (P4)"
        )
    attributes = list(m.get_attributes()) if hasattr(m, "get_attributes") else []
    for a in attributes:
        try:
            values = getattr(m, f"get_{a}")()
            if not isinstance(values, (tuple, list)):
                figs.failures.append(f"get_{a}() returns {type(values).__name__}, nn~ needs a tuple or list")
                continue
            if getattr(m, f"set_{a}")(*values) != 0:
                figs.failures.append(f"set_{a}(...) does not return 0")
        except Exception as e:
            figs.failures.append(f"attribute {a}: {str(e).splitlines()[0][:200]}")
    for h in hazards(path):
        figs.failures.append(f"uses {h.split(' (')[0]}")
    for r in [x for mm in methods for x in (mm.in_ratio, mm.out_ratio)]:
        if r > 4096 or r & (r - 1):
            figs.failures.append(f"ratio {r} is above 4096 or not a power of two (P2)")
    streaming = bool(spec_meta.get("streaming", False))
    precision = str(spec_meta.get("precision") or "fp32")
    spec = ExportSpec(family=spec_meta.get("family", "?"), sample_rate=max(sr, 1), methods=tuple(methods))
    higher = max([1] + [max(mm.in_ratio, mm.out_ratio) for mm in methods])
    buffer = max(buffer, higher)
    # declared shapes, batch 1 and 2 (mc.nn~), on fresh loads so the probe leaves no state behind
    for nb in (1, 2):
        probe = load(path)
        for mm in methods:
            with torch.inference_mode():
                try:
                    y = _call(probe, mm.name)(torch.zeros(nb, mm.in_channels, buffer // mm.in_ratio))
                except Exception as e:
                    figs.failures.append(f"{mm.name} (batch {nb}): {str(e).strip().splitlines()[0][:200]}")
                    continue
            figs.shape(f"{mm.name} (batch {nb})", y, (nb, mm.out_channels, buffer // mm.out_ratio))
    if figs.failures:
        raise DataError(f"{path}: check failed: {'; '.join(figs.failures)}")
    checkpoint = opts.checkpoint or meta.get("checkpoint")
    offline = _eager(checkpoint, streaming=False, precision=precision)
    spec = _input_spec(spec, offline)
    samples, audio_name = load_audio(opts.audio or find_audio(), opts.blocks * buffer, spec.sample_rate)
    inputs, sources = method_inputs(spec, samples, offline.module if offline else None)
    has_eager = offline is not None
    for mm in spec.methods:
        x = inputs[mm.name]
        block = buffer // mm.in_ratio
        got, _ = run_blocks(_call(load(path), mm.name), x, block)
        fig = figs.methods.setdefault(mm.name, {})
        _timed(fig, "", _call(load(path), mm.name), x, block, buffer, spec.sample_rate, opts.timing)
        ref = None
        if has_eager:
            ref, _ = run_blocks(_call(_eager(checkpoint, streaming, precision).module, mm.name), x, block)
            eager = _eager(checkpoint, streaming, precision).module  # fresh state: warm-up moves it on
            _timed(fig, "eager_", _call(eager, mm.name), x, block, buffer, spec.sample_rate, opts.timing)
        figs.compare(mm.name, "max_abs_error", got, ref, mm.out_ratio == 1)
        if streaming and offline is not None:
            with torch.inference_mode():
                full = _call(offline.module, mm.name)(x)
            figs.compare(mm.name, "stream_vs_offline", got, full, False)
    if figs.failures:
        raise DataError(f"{path}: check failed: {'; '.join(figs.failures)}")
    return {
        "profile": "nn~",
        "streaming": streaming,
        "io": {
            "methods": {mm.name: mm.params for mm in methods},
            "attributes": attributes,
            "sample_rate": sr,
            "precision": precision,
        },
        "checkpoint": checkpoint,
        "figures": _figures_record(audio_name, buffer, offline, figs, sources),
    }


def _references(
    path: Any,
    figs: _Figures,
    mm: MethodSpec,
    y: Any,
    buffer: int,
    meta: dict[str, Any],
    spec_meta: dict[str, Any],
    opts: _Options,
) -> tuple[Any, registry.Loaded | None, MethodSpec, torch.Tensor, str, dict[str, str]]:
    """Check the first buffer's shape, then load the eager offline reference and the real-audio input.

    Returns (checkpoint, offline eager model or None, the method spec used for inputs, method input,
    audio name, how the input was made).
    """
    figs.shape(mm.name, y, (1, mm.out_channels, buffer // mm.out_ratio))
    if figs.failures:
        raise DataError(f"{path}: check failed: {'; '.join(figs.failures)}")
    checkpoint = opts.checkpoint or meta.get("checkpoint")
    offline = _eager(checkpoint, streaming=False)
    spec = _input_spec(ExportSpec.from_json(spec_meta), offline)
    samples, audio_name = load_audio(opts.audio or find_audio(), opts.blocks * buffer, spec.sample_rate)
    inputs, sources = method_inputs(spec, samples, offline.module if offline else None)
    return checkpoint, offline, spec.method(mm.name), inputs[mm.name], audio_name, {mm.name: sources[mm.name]}


def _compare(
    path: Any,
    figs: _Figures,
    mm: MethodSpec,
    got: torch.Tensor,
    ref: torch.Tensor | None,
    offline: registry.Loaded | None,
    x: torch.Tensor,
    streaming: bool,
) -> None:
    """Artifact vs eager, streamed vs offline; DataError listing every failure."""
    figs.compare(mm.name, "max_abs_error", got, ref, mm.out_ratio == 1)
    if streaming and offline is not None:
        with torch.inference_mode():
            full = _call(offline.module, mm.name)(x)
        figs.compare(mm.name, "stream_vs_offline", got, full, False)
    if figs.failures:
        raise DataError(f"{path}: check failed: {'; '.join(figs.failures)}")


def _check_onnx(path, meta, profile_name, buffer, opts: _Options) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    from acids_export import profiles
    from acids_export.onnx import profile_problems

    figs = _Figures(opts.atol, opts.spectral_db)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise DataError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None
    profile_name = profile_name or meta.get("profile") or "desktop"
    try:
        profile = profiles.get(profile_name)
    except KeyError as e:
        raise DataError(str(e.args[0])) from None
    problems = profile_problems(model, profile, tuple(meta.get("allow_ops", ())))
    if problems:
        raise DataError(f"{path}: breaks profile {profile.name}: {'; '.join(problems)}")
    if not meta:
        raise DataError(
            f"{path}: has no acids_export metadata (method, ratios, state): not from acids-export"
        )
    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = 1
    sess_opts.inter_op_num_threads = 1
    sess_opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess_opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise DataError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
    mm = MethodSpec(meta["method"], *meta["params"])
    spec_meta = meta["spec"]
    sr = int(spec_meta["sample_rate"])
    streaming = bool(meta["streaming"])
    states = [np.zeros(s["shape"], s.get("dtype", "float32")) for s in meta["state"]]
    in_names = [i.name for i in sess.get_inputs()]
    if len(in_names) != 1 + len(states):
        raise DataError(f"{path}: {len(in_names)} inputs, metadata declares 1 + {len(states)} state tensors")
    buffer = max(buffer or profile.buffer, mm.in_ratio, mm.out_ratio)
    if not meta.get("dynamic_time", True):
        buffer = int(meta["buffer"])  # a static graph runs at the buffer it was exported for

    def stepper() -> Callable[[torch.Tensor], torch.Tensor]:
        state = [s.copy() for s in states]

        def step(x: torch.Tensor) -> torch.Tensor:
            feed = {"x": x.numpy()}
            feed.update({f"state_in.{i}": s for i, s in enumerate(state)})
            out = sess.run(None, feed)
            state[:] = out[1:]
            return torch.from_numpy(out[0])

        return step

    y = stepper()(torch.zeros(1, mm.in_channels, buffer // mm.in_ratio))
    checkpoint, offline, mm, x, audio_name, sources = _references(
        path, figs, mm, y, buffer, meta, spec_meta, opts
    )
    block = buffer // mm.in_ratio
    static = not meta.get("dynamic_time", True)
    blockwise = streaming or static  # a static offline graph (TensorRT) also runs one buffer at a time
    if blockwise:
        got, _ = run_blocks(stepper(), x, block)
    else:  # offline graph: the whole signal at once, plus a batch-2 call for the dynamic batch
        got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        y2 = sess.run(None, {"x": np.repeat(x[..., :block].numpy(), 2, axis=0)})[0]
        figs.shape(f"{mm.name} (batch 2)", y2, (2, mm.out_channels, buffer // mm.out_ratio))
    fig = figs.methods.setdefault(mm.name, {})
    _timed(fig, "", stepper(), x, block, buffer, sr, opts.timing)  # offline graphs: one buffer per call
    ref = None
    if offline is not None:
        if blockwise:
            ref, _ = run_blocks(_call(_eager(checkpoint, streaming).module, mm.name), x, block)
        else:
            with torch.inference_mode():
                ref = _call(offline.module, mm.name)(x)
        eager = _eager(checkpoint, streaming).module
        _timed(fig, "eager_", _call(eager, mm.name), x, block, buffer, sr, opts.timing)
    _compare(path, figs, mm, got, ref, offline, x, streaming)
    return {
        "profile": profile.name,
        "streaming": streaming,
        "io": {
            "method": mm.name,
            "params": mm.params,
            "sample_rate": sr,
            "inputs": {i.name: i.shape for i in sess.get_inputs()},
            "outputs": {o.name: o.shape for o in sess.get_outputs()},
            "opset": profile.opset,
            "ir_version": model.ir_version,
        },
        "checkpoint": checkpoint,
        "figures": _figures_record(audio_name, buffer, offline, figs, sources),
    }


def _check_pt2(path, meta, buffer, opts: _Options) -> dict[str, Any]:
    """A torch.export program ``(x, *state) -> (y, *state)``: block by block vs eager, and vs offline."""
    from acids_export.torch_export import load

    if not meta:
        raise DataError(
            f"{path}: has no acids_export metadata (method, ratios, state): not from acids-export"
        )
    figs = _Figures(opts.atol, opts.spectral_db)
    program = load(path)
    mm = MethodSpec(meta["method"], *meta["params"])
    spec_meta = meta["spec"]
    sr = int(spec_meta["sample_rate"])
    streaming = bool(meta["streaming"])
    buffer = max(buffer or int(meta["buffer"]), mm.in_ratio, mm.out_ratio)
    if not meta.get("dynamic_time", True):
        buffer = int(meta["buffer"])

    def stepper() -> Callable[[torch.Tensor], torch.Tensor]:
        state = [
            torch.zeros(s["shape"], dtype=getattr(torch, s.get("dtype", "float32"))) for s in meta["state"]
        ]

        def step(x: torch.Tensor) -> torch.Tensor:
            if not state:
                return program(x)
            y, *new = program(x, *state)
            state[:] = new
            return y

        return step

    with torch.inference_mode():
        y = stepper()(torch.zeros(1, mm.in_channels, buffer // mm.in_ratio))
    checkpoint, offline, mm, x, audio_name, sources = _references(
        path, figs, mm, y, buffer, meta, spec_meta, opts
    )
    block = buffer // mm.in_ratio
    got, _ = run_blocks(stepper(), x, block)
    fig = figs.methods.setdefault(mm.name, {})
    _timed(fig, "", stepper(), x, block, buffer, sr, opts.timing)
    ref = None
    if offline is not None:
        ref, _ = run_blocks(_call(_eager(checkpoint, streaming).module, mm.name), x, block)
        eager = _eager(checkpoint, streaming).module
        _timed(fig, "eager_", _call(eager, mm.name), x, block, buffer, sr, opts.timing)
    _compare(path, figs, mm, got, ref, offline, x, streaming)
    return {
        "profile": "torch.export",
        "streaming": streaming,
        "io": {
            "method": mm.name,
            "params": mm.params,
            "sample_rate": sr,
            "state": meta["state"],
            "dynamic_time": meta.get("dynamic_time", True),
        },
        "checkpoint": checkpoint,
        "figures": _figures_record(audio_name, buffer, offline, figs, sources),
    }
