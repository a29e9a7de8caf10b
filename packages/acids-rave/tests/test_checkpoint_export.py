import dataclasses
import warnings
from importlib.metadata import entry_points

import pytest
import torch

from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint
from acids_core.errors import DataError, MissingInput
from acids_rave import checkpoint
from acids_rave.export import exportable, script
from acids_rave.model import Rave


def _fitted(tiny, fidelity=0.9):
    torch.manual_seed(0)
    model = Rave(tiny).eval()
    means = torch.randn(500, tiny.latent_size) * torch.tensor([3.0, 1.0, 0.3, 0.1])
    model.fit_latent_pca(means, fidelity)
    return model


def test_round_trip_keeps_config_and_latent_analysis(tiny, tmp_path):
    model = _fitted(tiny)
    assert model.n_latent == 2
    path = checkpoint.save(tmp_path / "m.ckpt", model, step=7, phase=2)
    loaded, env = checkpoint.load(path)
    assert env["format"] == "acids-rave" and env["format_version"] == 1
    assert env["payload"]["step"] == 7 and env["payload"]["phase"] == 2
    assert loaded.config == tiny and loaded.n_latent == 2
    x = torch.randn(2, 1, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), model.encode(x))
        torch.testing.assert_close(loaded(x), model(x))


def test_refuses_other_formats_newer_versions_and_missing_files(tiny, tmp_path):
    env = make_envelope(format="acids-ddsp", format_version=1, payload={})
    save_checkpoint(tmp_path / "other.ckpt", env)
    with pytest.raises(DataError, match="acids-ddsp"):
        checkpoint.load(tmp_path / "other.ckpt")
    model = Rave(tiny)
    checkpoint.save(tmp_path / "m.ckpt", model)
    env = load_checkpoint(tmp_path / "m.ckpt")
    env["format_version"] = 99
    save_checkpoint(tmp_path / "new.ckpt", env)
    with pytest.raises(DataError, match="upgrade acids-rave"):
        checkpoint.load(tmp_path / "new.ckpt")
    with pytest.raises(MissingInput):
        checkpoint.load(tmp_path / "absent.ckpt")


def test_fused_model_is_not_saved(tiny, tmp_path):
    model = Rave(tiny)
    model.fuse()
    with pytest.raises(ValueError, match="fused"):
        checkpoint.save(tmp_path / "m.ckpt", model)


def test_latent_pca_and_fidelity(tiny):
    model = _fitted(tiny, fidelity=1.0)
    assert model.n_latent == 4
    table = model.fidelity_table()
    assert torch.all(table[1:] >= table[:-1]) and abs(table[-1].item() - 1) < 1e-6
    assert model.set_fidelity(0.5) == 1
    x = torch.randn(1, 1, 256)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (1, 1, 4)
        # dropped dims are the mean (zero in PCA coordinates): padding them explicitly is the same
        full = torch.nn.functional.pad(z, (0, 0, 0, 3))
        torch.testing.assert_close(model.decode(z), model.decode(full))
    with pytest.raises(ValueError):
        model.set_fidelity(0.0)


def test_scripted_streaming_export_matches_offline(tiny, tmp_path):
    model = _fitted(tiny)
    module = exportable(model, streaming=True, fidelity=0.99)
    spec = module.io_spec()
    assert spec["methods"]["encode"] == [1, 1, 3, 64] and spec["methods"]["decode"] == [3, 64, 1, 1]
    assert spec["methods"]["forward"] == [1, 1, 1, 1] and spec["latency_samples"] == 112
    scripted = script(module)
    path = tmp_path / "rave.ts"
    scripted.save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path))
    model.set_fidelity(0.99)
    x = 0.3 * torch.randn(1, 1, 1024)
    with torch.no_grad():
        offline = model(x)
        streamed = torch.cat([loaded(c) for c in x.split(256, -1)], -1)
        torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-4)
        assert loaded.get_methods() == ["encode", "decode", "forward"]
        assert loaded.get_sample_rate() == 44100
        assert loaded.encode(x[..., :128]).shape == (1, 3, 2)
        # nn~ self-test shapes: batch 1 and 4, an 8192 buffer
        for b in (1, 4):
            assert loaded.decode(torch.zeros(b, 3, 8192 // 64)).shape == (b, 1, 8192)


def test_offline_export_of_a_non_causal_model(tiny):
    model = Rave(dataclasses.replace(tiny, causal=False)).eval()
    scripted = script(exportable(model, streaming=False))
    x = torch.randn(1, 1, 512)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="causal"):
        exportable(model, streaming=True)


def test_entry_point_is_registered():
    eps = {ep.name: ep for ep in entry_points(group="acids.exportables")}
    assert eps["rave"].load() is exportable
