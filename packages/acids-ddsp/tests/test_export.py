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
