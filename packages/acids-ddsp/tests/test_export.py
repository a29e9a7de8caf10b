"""The nn~ wrapper: TorchScript, method table, streamed blocks == offline, entry point."""

from importlib.metadata import entry_points

import pytest
import torch
from conftest import random_controls

from acids_ddsp import checkpoint
from acids_ddsp.config import preset
from acids_ddsp.export import exportable, script
from acids_ddsp.model import DDSP


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_scripted_wrapper_streams_like_the_offline_model(tmp_path):
    torch.manual_seed(0)
    model = DDSP(preset("tiny")).eval()
    f0, loudness = random_controls(1, 64)
    with torch.no_grad():
        offline = model(f0, loudness)
    path = tmp_path / "m.ckpt"
    checkpoint.save(model, path)
    ts = script(exportable(path))
    hop = preset("tiny").hop
    assert ts.get_methods() == ["forward"]
    assert ts.forward_params.tolist() == [2, hop, 1, 1]
    x = torch.cat([f0, loudness], dim=1)
    with torch.no_grad():
        streamed = torch.cat([ts(c) for c in x.split(8192 // hop // 8, dim=-1)], dim=-1)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)
    # nn~'s own self-test: zeros (1, in_ch, 8192 // in_ratio) -> (1, out_ch, 8192 // out_ratio)
    saved = tmp_path / "m.ts"
    ts.save(str(saved))
    with torch.no_grad():
        out = torch.jit.load(str(saved))(torch.zeros(1, 2, 8192 // hop))
    assert out.shape == (1, 1, 8192)


def test_entry_point_follows_the_acids_export_contract(tmp_path):
    eps = [e for e in entry_points(group="acids.exportables") if e.name == "ddsp"]
    assert eps, "acids-ddsp is not installed with its entry points"
    torch.manual_seed(0)
    model = DDSP(preset("tiny")).eval()
    checkpoint.save(model, tmp_path / "m.ckpt")
    module = eps[0].load()(tmp_path / "m.ckpt")
    spec = module.io_spec()
    assert spec["methods"]["forward"]["params"] == [2, 64, 1, 1]
    assert spec["sample_rate"] == 16000 and spec["streaming"] is True
    f0, loudness = random_controls(2, 32)
    x = torch.cat([f0, loudness], dim=1)
    with torch.no_grad():
        fresh = torch.cat([module(c) for c in x.split(8, dim=-1)], dim=-1)
        # state buffers reassigned by a block, zero-filled: must behave as a fresh stream
        before = {n: b for n, b in module.named_buffers()}
        module(x[..., :8])
        state = [n for n, b in module.named_buffers() if b is not before[n]]
        assert state, "no state buffer was reassigned"
        for name in state:
            owner, _, attr = name.rpartition(".")
            sub = module.get_submodule(owner)
            setattr(sub, attr, torch.zeros_like(getattr(sub, attr)))
        zeroed = torch.cat([module(c) for c in x.split(8, dim=-1)], dim=-1)
    torch.testing.assert_close(zeroed, fresh, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_autoencoder_wrapper_has_encode_and_decode(tmp_path):
    """tiny-ae: nn~ methods forward (mean z), encode, decode; streamed in TorchScript == offline eager."""
    torch.manual_seed(0)
    model = DDSP(preset("tiny-ae")).eval()
    model.z_mean.copy_(torch.tensor([0.5, -1.0, 0.25, 2.0]))  # what training stores
    hop, frames = model.hop, 64
    f0, loudness = random_controls(1, frames)
    audio = 0.1 * torch.randn(1, 1, frames * hop)
    with torch.no_grad():
        z = model.encode(audio)  # (1, F, 4)
        offline_decode = model.decode(f0[:, 0], loudness[:, 0], z)
        offline_ae = model(f0, loudness, audio)
        offline_mean = model(f0, loudness)
    torch.testing.assert_close(offline_decode, offline_ae)
    assert (offline_mean - offline_ae).abs().max() > 1e-4  # the mean z is not the encoded z
    checkpoint.save(model, tmp_path / "ae.ckpt")
    ts = script(exportable(tmp_path / "ae.ckpt"))
    ts.save(str(tmp_path / "ae.ts"))
    ts = torch.jit.load(str(tmp_path / "ae.ts"))
    assert ts.get_methods() == ["forward", "encode", "decode"]
    assert ts.encode_params.tolist() == [1, 1, 4, hop]
    assert ts.decode_params.tolist() == [6, hop, 1, 1]
    assert ts.forward_params.tolist() == [2, hop, 1, 1]
    spec = exportable(tmp_path / "ae.ckpt").io_spec()
    assert spec["methods"]["decode"]["params"] == [6, hop, 1, 1]
    assert len(spec["methods"]["encode"]["output_labels"]) == 4
    block = 8  # frames per call
    with torch.no_grad():
        z_streamed = torch.cat([ts.encode(c) for c in audio.split(block * hop, dim=-1)], dim=-1)
        x = torch.cat([f0, loudness, z_streamed], dim=1)
        decoded = torch.cat([ts.decode(c) for c in x.split(block, dim=-1)], dim=-1)
    torch.testing.assert_close(z_streamed, z.transpose(1, 2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(decoded, offline_ae, atol=1e-5, rtol=1e-4)
    fresh = torch.jit.load(str(tmp_path / "ae.ts"))
    x = torch.cat([f0, loudness], dim=1)
    with torch.no_grad():
        streamed = torch.cat([fresh(c) for c in x.split(block, dim=-1)], dim=-1)
        # nn~'s self-test of every method: zeros (1, in_ch, 8192 // in_ratio)
        assert fresh.encode(torch.zeros(1, 1, 8192)).shape == (1, 4, 8192 // hop)
        assert fresh.decode(torch.zeros(1, 6, 8192 // hop)).shape == (1, 1, 8192)
    torch.testing.assert_close(streamed, offline_mean, atol=1e-5, rtol=1e-4)


def test_example_inputs_hook_gives_real_inputs_for_every_method():
    """acids-export ``check`` runs each method on the model's own inputs from real audio."""
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("acids_data.features")
    phrase = "/work/shared/data/phrases/16000/violin_phrases.flac"
    try:
        audio, sr = sf.read(phrase, start=32000, frames=16000, dtype="float32")
    except RuntimeError:
        pytest.skip(f"{phrase} is not here")
    torch.manual_seed(0)
    model = DDSP(preset("tiny-ae")).eval()
    module = exportable(model)
    inputs = module.example_inputs(audio, sr)
    frames = 16000 // 64
    assert inputs["forward"].shape == (1, 2, frames) and inputs["encode"].shape == (1, 1, frames * 64)
    assert inputs["decode"].shape == (1, 6, frames)
    f0 = inputs["forward"][0, 0]
    assert ((f0 > 150) & (f0 < 2000)).float().mean() > 0.5  # a violin's f0 in Hz, not noise
    with torch.no_grad():
        torch.testing.assert_close(inputs["decode"][:, 2:], model.encode(inputs["encode"]).transpose(1, 2))
    assert set(exportable(DDSP(preset("tiny")).eval()).example_inputs(audio, sr)) == {"forward"}
