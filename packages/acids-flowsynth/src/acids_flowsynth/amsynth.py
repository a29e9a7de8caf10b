"""``amsynth``: the amsynth VST2 (Debian package ``amsynth``) hosted through DawDreamer, and its preset banks.

The open analogue of the paper's Diva setup: a real synthesizer and its human-made presets (28 banks
shipped with the package, 3,482 slots). Optional: ``apt-get install amsynth`` and
``pip install acids-flowsynth[amsynth]`` (DawDreamer, GPLv3).

**Parameters.** The 41 parameters of amsynth's plugin, in its order. Physical values are amsynth's
*control values*, what its ``.bank`` files store (a time is stored as c in [0, 2.5] and displayed as
0.0005 + c³ s, a cutoff as c in [-0.5, 1.5], and so on; the display law is amsynth's business). The VST's
normalised value is linear in the control value, u = (c - lo) / (hi - lo), so the table's curves are all
``linear`` and a dataset's normalised vectors are exactly what the plugin receives. The ranges and defaults
below were read from the plugin (its state chunk at u = 0, u = 1 and at creation); a test checks them
against the installed plugin. Discrete parameters are those the plugin rounds to whole control values
(waveforms, osc2 range/pitch/sync, keyboard mode, filter type/slope, FM source) and portamento mode.

**Determinism.** Renders go through :mod:`acids_flowsynth.amsynth_worker`: one process per sample rate
holding a pristine instance that forks a child per sound (see there). Bit-exact re-renders; ``jobs``
children run at once (``ACIDS_AMSYNTH_JOBS``, default min(2, CPUs)).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acids_core.errors import DataError, MissingDependency, MissingInput
from acids_flowsynth.synth import Param

PLUGIN_PATHS = (
    "/usr/lib/vst/amsynth_vst.so",
    "/usr/lib/x86_64-linux-gnu/vst/amsynth_vst.so",
    "/usr/lib/aarch64-linux-gnu/vst/amsynth_vst.so",
    "/usr/local/lib/vst/amsynth_vst.so",
)
BANK_DIRS = ("/usr/share/amsynth/banks", "/usr/local/share/amsynth/banks")
INSTALL_HINT = "apt-get install amsynth && pip install 'acids-flowsynth[amsynth]'"


def _c(name: str, lo: float, hi: float, default: float, unit: str = "") -> Param:
    return Param(name, lo, hi, default, unit=unit)


def _d(name: str, lo: float, hi: float, default: float) -> Param:
    return Param(name, lo, hi, default, continuous=False, steps=round(hi - lo) + 1)


PARAMS: tuple[Param, ...] = (
    _c("amp_attack", 0.0, 2.5, 0.0),
    _c("amp_decay", 0.0, 2.5, 0.0),
    _c("amp_sustain", 0.0, 1.0, 1.0),
    _c("amp_release", 0.0, 2.5, 0.0),
    _d("osc1_waveform", 0.0, 4.0, 2.0),
    _c("filter_attack", 0.0, 2.5, 0.0),
    _c("filter_decay", 0.0, 2.5, 0.0),
    _c("filter_sustain", 0.0, 1.0, 1.0),
    _c("filter_release", 0.0, 2.5, 0.0),
    _c("filter_resonance", 0.0, 0.97, 0.0),
    _c("filter_env_amount", -16.0, 16.0, 0.0),
    _c("filter_cutoff", -0.5, 1.5, 1.5),
    _c("osc2_detune", -1.0, 1.0, 0.0),
    _d("osc2_waveform", 0.0, 4.0, 2.0),
    _c("master_vol", 0.0, 1.0, 0.67),
    _c("lfo_freq", 0.0, 7.5, 0.0),
    _d("lfo_waveform", 0.0, 6.0, 0.0),
    _d("osc2_range", -3.0, 4.0, 0.0),
    _c("osc_mix", -1.0, 1.0, 0.0),
    _c("freq_mod_amount", 0.0, 1.25992, 0.0),
    _c("filter_mod_amount", -1.0, 1.0, -1.0),
    _c("amp_mod_amount", -1.0, 1.0, -1.0),
    _c("osc_mix_mode", 0.0, 1.0, 0.0),
    _c("osc1_pulsewidth", 0.0, 1.0, 1.0),
    _c("osc2_pulsewidth", 0.0, 1.0, 1.0),
    _c("reverb_roomsize", 0.0, 1.0, 0.0),
    _c("reverb_damp", 0.0, 1.0, 0.0),
    _c("reverb_wet", 0.0, 1.0, 0.0),
    _c("reverb_width", 0.0, 1.0, 1.0),
    _c("distortion_crunch", 0.0, 0.9, 0.0),
    _d("osc2_sync", 0.0, 1.0, 0.0),
    _c("portamento_time", 0.0, 1.0, 0.0),
    _d("keyboard_mode", 0.0, 2.0, 0.0),
    _d("osc2_pitch", -12.0, 12.0, 0.0),
    _d("filter_type", 0.0, 4.0, 0.0),
    _d("filter_slope", 0.0, 1.0, 1.0),
    _d("freq_mod_osc", 0.0, 2.0, 0.0),
    _c("filter_kbd_track", 0.0, 1.0, 1.0),
    _c("filter_vel_sens", 0.0, 1.0, 1.0),
    _c("amp_vel_sens", 0.0, 1.0, 1.0),
    _d("portamento_mode", 0.0, 1.0, 0.0),
)
NAMES = tuple(p.name for p in PARAMS)

# 16: the paper's Diva-16 in spirit (amp and filter envelopes, filter, oscillator detune/mix/shapes, FM,
# drive); 32: every continuous parameter (30) and the two oscillator waveforms; all: the 41.
SUBSETS: dict[str, tuple[str, ...]] = {
    "16": (
        "amp_attack",
        "amp_decay",
        "amp_sustain",
        "amp_release",
        "filter_attack",
        "filter_decay",
        "filter_sustain",
        "filter_resonance",
        "filter_env_amount",
        "filter_cutoff",
        "osc2_detune",
        "osc_mix",
        "freq_mod_amount",
        "osc1_pulsewidth",
        "osc2_pulsewidth",
        "distortion_crunch",
    ),
    "32": (*(p.name for p in PARAMS if p.continuous), "osc1_waveform", "osc2_waveform"),
    "all": NAMES,
}


def find_plugin() -> str | None:
    """The amsynth VST2 library: ``$AMSYNTH_VST`` or the Debian locations; None when absent."""
    env = os.environ.get("AMSYNTH_VST")
    for path in (env,) if env else PLUGIN_PATHS:
        if path and Path(path).is_file():
            return path
    return None


def missing() -> str | None:
    """Why the backend cannot run here (None when it can)."""
    reasons = []
    if importlib.util.find_spec("dawdreamer") is None:
        reasons.append("DawDreamer is not installed")
    if find_plugin() is None:
        reasons.append("the amsynth VST (amsynth_vst.so) was not found")
    return "; ".join(reasons) + f" ({INSTALL_HINT})" if reasons else None


# ---- preset banks


def bank_files(source: str | os.PathLike[str] | None = None) -> list[Path]:
    """The ``.bank`` files of ``source`` (a file or a directory; default ``$AMSYNTH_BANKS`` or the
    package's banks), sorted by name."""
    if source is None:
        source = os.environ.get("AMSYNTH_BANKS") or next((d for d in BANK_DIRS if Path(d).is_dir()), None)
        if source is None:
            raise MissingInput(f"no amsynth preset banks found in {', '.join(BANK_DIRS)} ({INSTALL_HINT})")
    p = Path(source)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise MissingInput(f"{p}: no such bank file or directory")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(".bank"))
    if not files:
        raise MissingInput(f"{p}: no .bank files")
    return files


_PARAM_LINE = re.compile(r"^<parameter>\s+(\S+)\s+(\S+)\s*$")
_PRESET_LINE = re.compile(r"^<preset>\s+<name>\s*(.*)$")


def parse_bank(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, float]]]:
    """An amsynth bank file → [(preset name, {parameter: control value})], in slot order."""
    text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    if not text or not text[0].startswith("amSynth"):
        raise DataError(f"{path}: not an amsynth bank (no 'amSynth' header)")
    presets: list[tuple[str, dict[str, float]]] = []
    for line in text[1:]:
        m = _PRESET_LINE.match(line)
        if m:
            presets.append((m.group(1).strip(), {}))
            continue
        m = _PARAM_LINE.match(line)
        if m and presets:
            try:
                presets[-1][1][m.group(1)] = float(m.group(2))
            except ValueError:
                raise DataError(f"{path}: bad value in {line!r}") from None
    return presets


def to_vector(values: dict[str, float]) -> np.ndarray:
    """Control values (missing ones at their defaults) → the normalised vector (41,), discrete snapped."""
    out = np.empty(len(PARAMS), np.float32)
    for i, p in enumerate(PARAMS):
        out[i] = p.snap(p.to_normalised(values.get(p.name, p.default)))
    return out


def bank_presets(source: str | os.PathLike[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Every slot of the banks of ``source``: names ("bank/slot name") and normalised vectors (n, 41).

    Empty slots (amsynth's "New Preset" at the defaults) are kept here; :func:`unique_presets` drops
    duplicates after the subset projection."""
    names, vectors = [], []
    for f in bank_files(source):
        bank = f.name.split(".")[0]
        for k, (name, values) in enumerate(parse_bank(f)):
            names.append(f"{bank}/{k:03d} {name}")
            vectors.append(to_vector(values))
    if not vectors:
        raise DataError(f"{source}: the banks hold no presets")
    return names, np.stack(vectors)


def unique_presets(names: Sequence[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The first preset of each distinct vector, in order."""
    _, first = np.unique(vectors, axis=0, return_index=True)
    keep = np.sort(first)
    return [names[i] for i in keep], vectors[keep]


def preset_text(vector: Sequence[float], name: str = "acids-flowsynth") -> str:
    """A normalised vector → an amsynth bank holding one preset (loadable in amsynth)."""
    lines = ["amSynth", f"<preset> <name> {name}"]
    for p, u in zip(PARAMS, vector, strict=True):
        v = float(p.to_physical(p.snap(float(u))))
        lines.append(f"<parameter> {p.name} {v:.6g}")
    return "\n".join(lines) + "\n"


# ---- rendering


class _Worker:
    """One render worker process (one sample rate)."""

    def __init__(self, plugin: str, sample_rate: int) -> None:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        debug = bool(os.environ.get("ACIDS_AMSYNTH_DEBUG"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "acids_flowsynth.amsynth_worker", plugin, str(sample_rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if debug else subprocess.DEVNULL,
            env=env,
        )
        hello = self._reply()
        if hello.get("params") != len(PARAMS):
            self.close()
            raise DataError(
                f"the amsynth plugin has {hello.get('params')} parameters, this backend knows {len(PARAMS)}"
            )

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=10)
            raise DataError(f"the amsynth worker exited (status {code}); rerun with ACIDS_AMSYNTH_DEBUG=1")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise DataError(f"amsynth worker: {reply.get('error')}")
        return reply

    def render(self, vectors: np.ndarray, request: dict[str, Any]) -> np.ndarray:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        head = {**request, "n": len(vectors), "params": vectors.shape[1]}
        self.proc.stdin.write((json.dumps(head) + "\n").encode())
        self.proc.stdin.write(np.ascontiguousarray(vectors, np.float64).tobytes())
        self.proc.stdin.flush()
        reply = self._reply()
        n, length = int(reply["n"]), int(reply["length"])
        data = self.proc.stdout.read(4 * n * length)
        if len(data) != 4 * n * length:
            raise DataError("the amsynth worker sent a short reply")
        return np.frombuffer(data, np.float32).reshape(n, length).copy()

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class AmsynthSynth:
    """The ``amsynth`` backend (see the module docstring). Not differentiable; deterministic."""

    name = "amsynth"
    params = PARAMS
    subsets = SUBSETS
    differentiable = False
    deterministic = True

    def __init__(self, plugin: str | None = None, jobs: int | None = None) -> None:
        why = missing() if plugin is None else None
        if why:
            raise MissingDependency(f"the amsynth backend is unavailable: {why}")
        self.plugin = plugin or find_plugin()
        if jobs is None:
            jobs = int(os.environ.get("ACIDS_AMSYNTH_JOBS", "0")) or min(2, os.cpu_count() or 1)
        self.jobs = max(1, jobs)
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def bank_presets(self, source: str | os.PathLike[str] | None = None) -> tuple[list[str], np.ndarray]:
        return bank_presets(source)

    def preset_text(self, vector: Sequence[float], name: str = "acids-flowsynth") -> str:
        return preset_text(vector, name)

    def render(self, params, note=60, velocity=100, hold=3.0, duration=4.0, sample_rate=22050):
        """(B, 41) normalised → (B, T) float32 tensor (no gradient)."""
        import torch

        v = torch.as_tensor(params).detach().to(torch.float64).cpu().numpy()
        if v.ndim != 2 or v.shape[1] != len(PARAMS):
            raise ValueError(f"amsynth params must be (B, {len(PARAMS)}), got {tuple(v.shape)}")
        b = v.shape[0]

        def per_item(x) -> list[int]:
            arr = torch.as_tensor(x).reshape(-1).tolist()
            return [round(float(a)) for a in (arr * b if len(arr) == 1 else arr)]

        request = {
            "notes": per_item(note),
            "velocities": per_item(velocity),
            "hold": float(hold),
            "duration": float(duration),
            "jobs": self.jobs,
        }
        with self._lock:
            worker = self._workers.get(int(sample_rate))
            if worker is None or worker.proc.poll() is not None:
                worker = self._workers[int(sample_rate)] = _Worker(self.plugin, int(sample_rate))
            audio = worker.render(np.clip(v, 0.0, 1.0), request)
        return torch.from_numpy(audio)

    def close(self) -> None:
        with self._lock:
            for w in self._workers.values():
                w.close()
            self._workers.clear()
