import warnings

import pytest
import torch
from bad_models import checkpoint

from acids_core.errors import DataError
from acids_export import registry, torchscript, verify


def _export(ckpt, tmp_path, streaming=True):
    loaded = registry.load(ckpt, streaming=streaming)
    out = tmp_path / "m.ts"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torchscript.export(loaded, out)
        torchscript.load(out)
    assert not [w for w in caught if "deprecated" in str(w.message).lower()]
    return out, loaded


def test_nn_tilde_interface(tiny_ckpt, tmp_path):
    out, _ = _export(tiny_ckpt, tmp_path)
    m = torchscript.load(out)
    assert m.get_methods() == ["forward", "encode", "decode"]
    for name, params in {"forward": [1, 1, 1, 1], "encode": [1, 1, 4, 16], "decode": [4, 16, 1, 1]}.items():
        p = getattr(m, f"{name}_params")
        assert p.dtype == torch.int64 and p.tolist() == params
        assert len(getattr(m, f"{name}_input_labels")) == params[0]
        assert len(getattr(m, f"{name}_output_labels")) == params[2]
    assert m.encode_output_labels[0] == "(latent) 0"
    assert m.get_sample_rate() == 16000  # set without set_sample_rate ever being called (P4)
    assert m.set_sample_rate(48000) == 0 and m.get_sample_rate() == 16000
    assert m.get_attributes() == ["gain"] and m.gain_params.tolist() == [2]
    assert m.get_buffer_attributes() == []
    x = torch.randn(1, 1, 4096)
    y1 = m(x)
    assert m.get_gain() == (1.0,)
    m2 = torchscript.load(out)
    assert m2.set_gain(0.5) == 0 and m2.get_gain() == (0.5,)
    torch.testing.assert_close(m2(x), y1 * 0.5)


def test_streaming_state_and_check_on_real_audio(tiny_ckpt, tmp_path, audio):
    out, _ = _export(tiny_ckpt, tmp_path)
    fields = verify.check(out, audio=audio, blocks=4)
    assert fields["format"] == "torchscript" and fields["streaming"] and len(fields["sha256"]) == 64
    assert fields["figures"]["audio"] == audio and fields["io"]["methods"]["decode"] == [4, 16, 1, 1]
    for name, fig in fields["figures"]["methods"].items():
        assert fig["max_abs_error"] < 1e-5, name
        assert fig["stream_vs_offline"] < 1e-5, name
        assert fig["rtf"] > 0
    assert fields["figures"]["methods"]["forward"]["spectral_distance_db"] < 0.01


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 8192}, "8192 > 4096"),
        ({"ratio": 3}, "not a power of two"),
        ({"mode": "stft"}, "aten::stft"),
    ],
)
def test_refuses_what_crashes_nn_tilde(tmp_path, kwargs, match):
    ckpt = checkpoint(tmp_path, "bad", **kwargs)
    try:
        with pytest.raises(DataError, match=match):
            torchscript.export(registry.load(ckpt), tmp_path / "bad.ts")
        assert not (tmp_path / "bad.ts").exists()
    finally:
        registry.unregister("bad")


@pytest.mark.parametrize(("mode", "match"), [("short", r"output \(1, 1, 4095\)"), ("nan", "NaN")])
def test_check_refuses_wrong_lengths_and_nan(tmp_path, mode, match):
    ckpt = checkpoint(tmp_path, "bad", mode=mode)
    try:
        torchscript.export(registry.load(ckpt), tmp_path / "bad.ts")
        with pytest.raises(DataError, match=match):
            verify.check(tmp_path / "bad.ts", blocks=2)
    finally:
        registry.unregister("bad")
