"""Noise branch without FFT/interpolate/rand at inference; exports through the real acids-export CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from acids_rave import checkpoint
from acids_rave.config import PRESETS, NoiseConfig
from acids_rave.export import exportable, script
from acids_rave.model import Rave, _dft_matrices, _interpolation_matrix


def _tiny_noisy():
    """The tiny preset with the noise branch on (noise frames of 4 band samples)."""
    cfg = PRESETS["tiny"]()
    noise = NoiseConfig(enabled=True, hidden=8, ratios=(2, 2), noise_bands=3)
    return dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, noise=noise))


def _phase2(cfg, seed=0):
    torch.manual_seed(seed)
    model = Rave(cfg).eval()
    model.decoder.noise_gain.fill_(1.0)
    return model


@pytest.mark.parametrize(("n_in", "n"), [(5, 64), (32, 8), (3, 4), (1, 8)])
def test_matrices_equal_interpolate_and_fft(n_in, n):
    bins = n // 2 + 1
    env = torch.rand(6, 1, n_in)
    reference = F.interpolate(env, size=bins, mode="linear", align_corners=True)
    torch.testing.assert_close(env @ _interpolation_matrix(n_in, bins), reference)
    x, amp = torch.randn(6, n), torch.rand(6, bins)
    fwd, inv = _dft_matrices(n)
    reference = torch.fft.irfft(torch.fft.rfft(x) * amp, n=n)
    torch.testing.assert_close(((x @ fwd) * torch.cat([amp, amp], -1)) @ inv, reference, atol=1e-5, rtol=1e-4)


def test_eval_noise_is_deterministic_and_streams_like_offline():
    cfg = _tiny_noisy()
    model = _phase2(cfg)
    r = cfg.compression_ratio
    x = 0.3 * torch.randn(2, 1, 12 * r)
    with torch.no_grad():
        offline = model(x)
        torch.testing.assert_close(model(x), offline, atol=0, rtol=0)
        model.decoder.noise_gain.fill_(0.0)
        assert (model(x) - offline).abs().max() > 1e-4  # the noise is really there
        model.decoder.noise_gain.fill_(1.0)
        model.set_streaming(True)
        streamed = torch.cat([model(c) for c in x.split([r, 3 * r, 2 * r, 6 * r], -1)], -1)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)
    # training mode draws fresh noise every call
    model.set_streaming(False)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model.decoder(torch.randn(1, 4, 8)), model.decoder(torch.randn(1, 4, 8)))


def test_scripted_noisy_model_equals_eager():
    model = _phase2(_tiny_noisy())
    x = 0.3 * torch.randn(1, 1, 8 * 64)
    scripted = script(exportable(model, streaming=True))
    with torch.no_grad():
        offline = model(x)
        streamed = torch.cat([scripted(c) for c in x.split(128, -1)], -1)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)


def test_graph_has_no_fft_interpolate_or_einsum():
    for cfg in (_tiny_noisy(), PRESETS["small"]()):
        scripted = script(exportable(_phase2(cfg), streaming=True))
        code = "\n".join(m.code for m in scripted.modules() if hasattr(m, "code"))
        for op in ("fft", "interpolate", "upsample", "einsum", "rand("):
            assert op not in code, op


def _cli(*args: str) -> dict:
    """Run the real ``acids-export`` CLI in a subprocess; its last stdout line is the artifact record."""
    r = subprocess.run(
        [sys.executable, "-m", "acids_export.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _export_all(ckpt, tmp_path, name):
    rec = _cli("torchscript", str(ckpt), "--streaming", "--blocks", "2", "-o", str(tmp_path / f"{name}.ts"))
    for method in ("encode", "decode", "forward"):
        fig = rec["figures"]["methods"][method]
        assert fig["max_abs_error"] <= 1e-4 and fig["stream_vs_offline"] <= 1e-4, (method, fig)
    for profile in ("rpi-bookworm", "jetson-jp4"):
        out = tmp_path / f"{name}-{profile}.onnx"
        rec = _cli("onnx", str(ckpt), "--profile", profile, "--streaming", "--blocks", "2", "-o", str(out))
        fig = rec["figures"]["methods"]["forward"]
        assert fig["max_abs_error"] <= 1e-4 and fig["stream_vs_offline"] <= 1e-4, (profile, fig)
        import onnx

        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert not ops & {"Einsum", "DFT", "STFT", "Resize", "Mod", "RandomUniform", "RandomUniformLike"}


def test_acids_export_cli_on_tiny_with_noise(tmp_path):
    pytest.importorskip("acids_export")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    ckpt = checkpoint.save(tmp_path / "tiny.ckpt", _phase2(_tiny_noisy()), phase=2)
    _export_all(ckpt, tmp_path, "tiny")


@pytest.mark.slow
def test_acids_export_cli_on_small(tmp_path):
    pytest.importorskip("acids_export")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    ckpt = checkpoint.save(tmp_path / "small.ckpt", _phase2(PRESETS["small"]()), phase=2)
    _export_all(ckpt, tmp_path, "small")
