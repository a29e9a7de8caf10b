import torch

from acids_export import registry
from acids_export.torch_export import export_program, load


def test_torch_export_route_with_explicit_state(tiny_ckpt, tmp_path):
    for streaming in (False, True):
        out = tmp_path / f"decode-{streaming}.pt2"
        loaded = registry.load(tiny_ckpt, streaming=streaming)
        info = export_program(loaded, out, method="decode", buffer=2048)
        assert info["dynamic_time"] and len(info["state"]) == (1 if streaming else 0)
        program = load(out)
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


def test_cli_flag_writes_a_checked_pt2(tiny_ckpt, tmp_path, audio):
    import json

    from click.testing import CliRunner

    from acids_export.cli import main_group

    out = tmp_path / "dec.pt2"
    args = [
        "torchscript",
        str(tiny_ckpt),
        "--torch-export",
        "--streaming",
        "--method",
        "decode",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(main_group, [*args, "--blocks", "3", "--audio", audio, "--buffer", "2048"])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert rec["format"] == "torch.export" and rec["io"]["method"] == "decode" and out.is_file()
    fig = rec["figures"]["methods"]["decode"]
    assert fig["max_abs_error"] < 1e-5 and fig["stream_vs_offline"] < 1e-4
    res = CliRunner().invoke(main_group, ["check", str(out), "--blocks", "2", "--audio", audio])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main_group, ["torchscript", str(tiny_ckpt), "--method", "decode"])
    assert res.exit_code == 2 and "--torch-export" in res.output
