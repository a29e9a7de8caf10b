"""Realistic check inputs (control features from real audio) and RTF timing after warm-up."""

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ddsp_like import HOP, SR
from ddsp_like import checkpoint as ddsp_like

from acids_core.errors import DataError
from acids_export import registry, torchscript, verify
from acids_export.cli import main_group
from acids_export.inputs import channel_features, load_audio, method_inputs, time_calls

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("ACIDS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def family():
    names = []

    def make(tmp_path, declare):
        name = f"ddspl{declare}"
        names.append(name)
        return ddsp_like(tmp_path, name, declare)

    yield make
    for n in names:
        registry.unregister(n)


def _record(res):
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return rec


def test_time_calls_leaves_the_warm_up_outlier_out():
    calls = []

    def slow_first(x):
        calls.append(x)
        time.sleep(0.2 if len(calls) == 1 else 0.002)

    blocks = [torch.zeros(1, 1, 64)] * 3
    t = time_calls(slow_first, blocks, budget_s=0.01, warmup=3, calls=10)
    assert len(calls) == 13 and t["warmup_calls"] == 3 and t["timed_calls"] == 10
    assert t["first_call_rtf"] > 15  # 0.2 s for 0.01 s of audio
    assert 0.15 < t["rtf"] < 2.0 and t["rtf"] <= t["rtf_p90"]  # ~0.002 s: the outlier is not in it


def test_torchscript_rtf_is_reported_after_warm_up(tiny_ckpt, tmp_path, audio):
    out = tmp_path / "t.ts"
    torchscript.export(registry.load(tiny_ckpt, streaming=True), out)
    fields = verify.check(out, audio=audio, blocks=3, buffer=2048, warmup=4, rtf_calls=12)
    for name, fig in fields["figures"]["methods"].items():
        assert fig["rtf_warmup_calls"] == 4 and fig["rtf_timed_calls"] == 12, name
        assert 0 < fig["rtf"] <= fig["rtf_p90"] and fig["eager_rtf"] > 0, name
    # TorchScript's profiling executor records, then optimises, on the first calls of a fresh load: for the
    # convolution-only methods that first call costs tens of buffers (measured 20-100x the median)
    for name in ("encode", "decode"):
        fig = fields["figures"]["methods"][name]
        assert fig["first_call_rtf"] > 5 * fig["rtf"], (name, fig)


class _SlowFirstCall:
    """A loaded TorchScript module whose first call of each method takes 0.3 s more (a warm-up outlier)."""

    def __init__(self, module):
        self._m, self._seen = module, set()

    def _slow(self, name, fn):
        def call(x):
            if name not in self._seen:
                self._seen.add(name)
                time.sleep(0.3)
            return fn(x)

        return call

    def __call__(self, x):
        return self._slow("forward", self._m)(x)

    def __getattr__(self, name):
        value = getattr(self._m, name)
        return self._slow(name, value) if name in ("encode", "decode") else value


def test_check_excludes_a_first_call_outlier_from_the_rtf(tiny_ckpt, tmp_path, audio, monkeypatch):
    out = tmp_path / "t.ts"
    torchscript.export(registry.load(tiny_ckpt, streaming=True), out)
    real_load = torchscript.load
    monkeypatch.setattr(torchscript, "load", lambda path: _SlowFirstCall(real_load(path)))
    fields = verify.check(out, audio=audio, blocks=2, buffer=4096, warmup=2, rtf_calls=8)
    fig = fields["figures"]["methods"]["decode"]
    budget = 4096 / 16000
    assert fig["first_call_rtf"] > 0.3 / budget  # the outlier was seen ...
    assert fig["rtf"] < 0.1 / budget and fig["rtf_p90"] < 0.1 / budget  # ... and is in no reported figure


def test_audio_is_resampled_to_the_model_rate(audio):
    x16, name = load_audio(audio, 16000, sample_rate=16000)
    x48, _ = load_audio(audio, 48000, sample_rate=48000)
    assert x16.shape == (16000,) and x16.dtype == np.float32 and name == os.path.abspath(audio)
    # the same second of the recording: equal energy at both rates (the content is below 8 kHz)
    assert abs(10 * np.log10(np.mean(x16**2) / np.mean(x48**2))) < 0.5


def _note(instrument: str, velocity: int = 80) -> tuple[Path, float]:
    table = SHARED / "notes" / "notes.csv"
    if not table.is_file():
        pytest.skip(f"no shared corpus at {SHARED} (set ACIDS_SHARED_DATA)")
    with open(table) as f:
        rows = [r for r in csv.DictReader(f) if r["file"].startswith("notes/48000/")]
    row = next(r for r in rows if r["instrument"] == instrument and int(r["velocity"]) == velocity)
    return SHARED / row["file"], float(row["f0_hz"])


@pytest.mark.parametrize("declare", ["inputs", "labels"])
def test_control_features_follow_a_known_pitch(tmp_path, family, declare):
    path, f0_true = _note("flute")
    spec = registry.load(family(tmp_path, declare), streaming=False).spec
    assert channel_features(spec.method("forward")) == ("f0_hz", "loudness_db")
    audio, _ = load_audio(str(path), 16384, sample_rate=SR)  # 48 kHz file, model at 16 kHz
    inputs, sources = method_inputs(spec, audio)
    x = inputs["forward"]
    assert x.shape == (1, 2, 16384 // HOP) and sources["forward"].startswith("features f0_hz,loudness_db")
    cents = 1200 * abs(math.log2(float(x[0, 0].median()) / f0_true))
    assert cents < 50, (float(x[0, 0].median()), f0_true)
    assert -60 < float(x[0, 1].median()) < 0  # a sustained note at velocity 80, in dB re full scale


def test_noise_only_when_nothing_says_what_the_inputs_are(tmp_path, family, audio):
    spec = registry.load(family(tmp_path, "none"), streaming=False).spec
    samples, _ = load_audio(audio, 4096, sample_rate=SR)
    _, sources = method_inputs(spec, samples)
    assert sources == {"forward": "noise (seeded)"}


def test_example_inputs_hook_wins_and_is_validated(tmp_path, family, audio):
    ckpt = family(tmp_path, "hook")
    loaded = registry.load(ckpt, streaming=False)
    samples, _ = load_audio(audio, 8192, sample_rate=SR)
    inputs, sources = method_inputs(loaded.spec, samples, loaded.module)
    assert sources == {"forward": "example_inputs"}
    assert torch.all(inputs["forward"][0, 0] == 330.0) and inputs["forward"].shape == (1, 2, 8192 // HOP)
    loaded.module.example_inputs = lambda a, sr: {"forward": torch.zeros(1, 3, 5)}
    with pytest.raises(DataError, match=r"example_inputs\(\)\['forward'\] is \(1, 3, 5\)"):
        method_inputs(loaded.spec, samples, loaded.module)


@pytest.mark.parametrize("command", ["torchscript", "onnx"])
def test_ddsp_like_checked_on_features_of_real_audio(tmp_path, family, audio, command):
    ckpt = family(tmp_path, "labels")  # acids-ddsp's current io spec: labels only (the fallback)
    args = [command, str(ckpt), "--streaming", "--blocks", "4", "--audio", audio, "--rtf-calls", "8"]
    if command == "onnx":
        args += ["--profile", "rpi-bookworm"]
    rec = _record(CliRunner().invoke(main_group, [*args, "-o", str(tmp_path / f"d.{command}")]))
    assert rec["figures"]["inputs"]["forward"].startswith("features f0_hz,loudness_db")
    fig = rec["figures"]["methods"]["forward"]
    assert fig["max_abs_error"] < 1e-5 and fig["stream_vs_offline"] < 1e-4
    assert fig["spectral_distance_db"] < 0.01
    # the artifact really ran on those features: eager on the same frames gives the same (audible) audio
    loaded = registry.load(ckpt, streaming=False)
    samples, _ = load_audio(audio, 4 * rec["figures"]["buffer"], sample_rate=SR)
    x, _ = method_inputs(loaded.spec, samples, loaded.module)
    with torch.no_grad():
        y = loaded.module(x["forward"])
    assert float(y.abs().max()) > 1e-3  # not silence: the loudness of real audio drives the synth


def test_spec_declares_inputs_and_keeps_them_in_the_file(tmp_path, family):
    loaded = registry.load(family(tmp_path, "inputs"), streaming=True)
    assert loaded.spec.method("forward").input_features == ("f0_hz", "loudness_db")
    back = registry.ExportSpec.from_json(json.loads(json.dumps(loaded.spec.to_json())))
    assert back.method("forward") == loaded.spec.method("forward")
    with pytest.raises(DataError, match="unknown inputs"):
        registry.ExportSpec.from_io_spec(
            "x", {"methods": {"f": {"params": [1, 4, 1, 1], "inputs": ["midi"]}}, "sample_rate": 8000}
        )
    with pytest.raises(DataError, match="2 inputs for 1 input channels"):
        registry.ExportSpec.from_io_spec(
            "x",
            {"methods": {"f": {"params": [1, 4, 1, 1], "inputs": ["f0_hz", "audio"]}}, "sample_rate": 8000},
        )


def test_float64_state_is_kept_on_onnxruntime_and_refused_for_tensorrt(tmp_path, family):
    from acids_export import onnx as aonnx
    from acids_export.profiles import PROFILES

    ckpt = family(tmp_path, "inputs")  # its oscillator phase is a float64 state tensor
    meta = aonnx.export(registry.load(ckpt, streaming=True), PROFILES["desktop"], tmp_path / "d.onnx")
    assert "float64" in [s["dtype"] for s in meta["state"]]
    with pytest.raises(DataError, match=r"float64 tensor 'state_in\.\d' \(TensorRT 8\.6"):
        aonnx.export(registry.load(ckpt, streaming=True), PROFILES["jetson-jp6"], tmp_path / "j.onnx")
