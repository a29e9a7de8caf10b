import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bad_models import Normed, Rounding, Spectral, model_checkpoint

from acids_core.errors import DataError
from acids_export import onnx as aonnx
from acids_export import registry, verify
from acids_export.dft import conv_stft
from acids_export.profiles import PROFILES

pytestmark = pytest.mark.filterwarnings("ignore:stft with return_complex=False")


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "offline"])
@pytest.mark.parametrize("profile", list(PROFILES))
def test_parity_with_onnxruntime_per_profile(tiny_ckpt, tmp_path, audio, profile, streaming):
    prof = PROFILES[profile]
    out = tmp_path / "m.onnx"
    meta = aonnx.export(registry.load(tiny_ckpt, streaming=streaming), prof, out)
    model = onnx.load(str(out))
    assert model.ir_version <= prof.ir_version
    assert [i.version for i in model.opset_import if i.domain in ("", "ai.onnx")] == [prof.opset]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert len(meta["state"]) == (3 if streaming else 0)  # two conv caches and the GRU state
    fields = verify.check(out, audio=audio, blocks=4)
    assert fields["profile"] == profile and fields["streaming"] == streaming
    fig = fields["figures"]["methods"]["forward"]
    assert fig["max_abs_error"] < 1e-4 and fig["spectral_distance_db"] < 0.05
    if streaming:
        assert fig["stream_vs_offline"] < 1e-4
        assert set(fields["io"]["inputs"]) == {"x", "state_in.0", "state_in.1", "state_in.2"}


@pytest.mark.parametrize("method", ["encode", "decode"])
def test_streaming_state_is_explicit_for_every_method(tiny_ckpt, tmp_path, audio, method):
    out = tmp_path / f"{method}.onnx"
    aonnx.export(registry.load(tiny_ckpt, streaming=True), PROFILES["jetson-jp4"], out, method=method)
    fig = verify.check(out, audio=audio, blocks=4)["figures"]["methods"][method]
    assert fig["max_abs_error"] < 1e-4 and fig["stream_vs_offline"] < 1e-4
    # a runtime other than ours streams it from the declared state shapes alone
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs() if i.name != "x"}
    x_ch = sess.get_inputs()[0].shape[1]
    frames = 2048 if method == "encode" else 128
    for _ in range(3):
        outs = sess.run(None, {"x": np.random.randn(1, x_ch, frames).astype(np.float32), **feeds})
        feeds = {f"state_in.{i}": s for i, s in enumerate(outs[1:])}


def test_refuses_an_operator_the_profile_lacks(tmp_path):
    ckpt = model_checkpoint(tmp_path, "rounding", Rounding)
    try:
        with pytest.raises(
            DataError, match=r"refused for jetson-jp4: operator Round is not in the jetson-jp4 operator table"
        ):
            aonnx.export(registry.load(ckpt), PROFILES["jetson-jp4"], tmp_path / "w.onnx")
        assert not (tmp_path / "w.onnx").exists()
        aonnx.export(registry.load(ckpt), PROFILES["jetson-jp4"], tmp_path / "w4.onnx", allow_ops=("Round",))
        verify.check(tmp_path / "w4.onnx", blocks=2)
    finally:
        registry.unregister("rounding")


def test_layer_norm_is_decomposed_where_the_profile_lacks_it(tmp_path, audio):
    ckpt = model_checkpoint(tmp_path, "normed", Normed)
    try:
        ops = {}
        for profile, allow in (("jetson-jp5", ()), ("jetson-jp6", ()), ("desktop", ())):
            out = tmp_path / f"{profile}.onnx"
            meta = aonnx.export(registry.load(ckpt), PROFILES[profile], out, allow_ops=allow)
            ops[profile] = {n.op_type for n in onnx.load(str(out)).graph.node}
            assert meta["layer_norm_decomposed"] == (profile == "jetson-jp5")
            fig = verify.check(out, audio=audio, blocks=2)["figures"]["methods"]["forward"]
            assert fig["max_abs_error"] < 1e-4
        assert "LayerNormalization" not in ops["jetson-jp5"] and "ReduceMean" in ops["jetson-jp5"]
        assert "LayerNormalization" in ops["jetson-jp6"] and "LayerNormalization" in ops["desktop"]
        out = tmp_path / "kept.onnx"  # --allow-op keeps the operator (verified on the board)
        aonnx.export(registry.load(ckpt), PROFILES["jetson-jp5"], out, allow_ops=("LayerNormalization",))
        assert "LayerNormalization" in {n.op_type for n in onnx.load(str(out)).graph.node}
    finally:
        registry.unregister("normed")


def test_stft_becomes_a_convolution_where_the_profile_lacks_it(tmp_path, audio):
    x = torch.randn(2, 4000)
    window = torch.hann_window(64)
    ref = torch.stft(x, 64, 16, window=window, return_complex=True)
    torch.testing.assert_close(
        conv_stft(x, 64, 16, window=window), torch.view_as_real(ref), atol=1e-4, rtol=1e-4
    )
    ckpt = model_checkpoint(tmp_path, "spectral", Spectral)
    try:
        ops = {}
        for profile in ("desktop", "jetson-jp4"):
            out = tmp_path / f"{profile}.onnx"
            meta = aonnx.export(registry.load(ckpt), PROFILES[profile], out)
            ops[profile] = {n.op_type for n in onnx.load(str(out)).graph.node}
            assert meta["stft_as_convolution"] == (profile == "jetson-jp4")
            fig = verify.check(out, audio=audio, blocks=2)["figures"]["methods"]["forward"]
            assert fig["max_abs_error"] < 1e-4
        assert "STFT" in ops["desktop"] and "STFT" not in ops["jetson-jp4"] and "Conv" in ops["jetson-jp4"]
    finally:
        registry.unregister("spectral")
