import torch

from acids_export import registry
from acids_export.torch_export import export_program


def test_torch_export_route_with_explicit_state(tiny_ckpt, tmp_path):
    for streaming in (False, True):
        out = tmp_path / f"decode-{streaming}.pt2"
        loaded = registry.load(tiny_ckpt, streaming=streaming)
        info = export_program(loaded, out, method="decode", buffer=2048)
        assert info["dynamic_time"] and len(info["state"]) == (1 if streaming else 0)
        program = torch.export.load(str(out)).module()
        z = torch.randn(1, 4, 512)
        offline = registry.load(tiny_ckpt, streaming=False).module
        with torch.no_grad():
            ref = offline.decode(z)
            if not streaming:
                torch.testing.assert_close(program(z), ref)
                continue
            state, outs = [torch.zeros(s["shape"]) for s in info["state"]], []
            for block in z.split(128, dim=-1):
                y, *state = program(block, *state)
                outs.append(y)
        torch.testing.assert_close(torch.cat(outs, -1), ref, atol=1e-5, rtol=1e-5)
