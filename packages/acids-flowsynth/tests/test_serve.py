"""OSC codec, the OSC server over real UDP on 127.0.0.1, and macro sweeps."""

import json
import socket
import threading

import pytest
import torch
from click.testing import CliRunner

from acids_flowsynth import osc


def test_osc_codec_round_trip():
    msg = osc.encode("/params", "osc_mix", 0.25, 3, "é", True, b"\x01\x02\x03")
    assert len(msg) % 4 == 0
    assert osc.decode(msg) == ("/params", ["osc_mix", 0.25, 3, "é", True, b"\x01\x02\x03"])
    assert osc.decode(osc.encode("/ping")) == ("/ping", [])
    with pytest.raises(osc.OSCError):
        osc.decode(b"#bundle\0")
    with pytest.raises(osc.OSCError):
        osc.decode(osc.encode("/x", 1.0)[:-2])


def _wav(tmp_path):
    import soundfile as sf

    from acids_flowsynth.synth import default_vector, get_backend

    b = get_backend("acids-sub")
    audio = b.render(torch.tensor([default_vector(b)]), sample_rate=16000, duration=4.0, hold=3.0)
    sf.write(tmp_path / "note.wav", audio[0].numpy(), 16000)
    return tmp_path / "note.wav"


def test_server_over_udp(tiny_flow_reg, tmp_path):
    from acids_flowsynth import checkpoint
    from acids_flowsynth.control import ControlSpace
    from acids_flowsynth.infer import note_mel
    from acids_flowsynth.serve import FlowServer

    wav = _wav(tmp_path)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(20)
    server = FlowServer(tiny_flow_reg, in_port=0, out_port=rx.getsockname()[1])
    thread = threading.Thread(target=server.serve, kwargs={"max_seconds": 60}, daemon=True)
    thread.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def ask(address, *args):
        tx.sendto(osc.encode(address, *args), ("127.0.0.1", server.port))
        return osc.decode(rx.recvfrom(65536)[0])

    try:
        assert ask("/ping") == ("/pong", [])
        address, args = ask("/encode", str(wav))
        assert address == "/params" and sorted(args[::2]) == ["env1_attack", "filter_cutoff", "osc_mix"]
        address, z = osc.decode(rx.recvfrom(65536)[0])
        assert address == "/z_pos" and len(z) == 3
        model, meta = checkpoint.load(tiny_flow_reg)
        expected = model.infer(torch.from_numpy(note_mel(wav, meta))[None])[0]
        torch.testing.assert_close(torch.tensor(args[1::2]), expected, atol=1e-6, rtol=0)
        space = ControlSpace.latent(model)
        _, (_, x_params) = ask("/decode", 0.5, -1.0), ask("/decode", 0.5, -1.0)
        torch.testing.assert_close(
            torch.tensor(x_params[1::2]), space.params(torch.tensor([[0.5, -1.0, 0.0]]))[0], atol=1e-6, rtol=0
        )
        _, dims = ask("/decode", 0.5, -1.0, 2, 0)
        torch.testing.assert_close(
            torch.tensor(dims[1::2]), space.params(torch.tensor([[-1.0, 0.0, 0.5]]))[0], atol=1e-6, rtol=0
        )
        # the z_pos of an encoded sound decodes to the same parameters
        _, again = ask("/decode", *z)
        torch.testing.assert_close(torch.tensor(again[1::2]), torch.tensor(args[1::2]), atol=1e-4, rtol=0)
        assert ask("/decode", "x")[0] == "/error"
        assert ask("/encode", str(tmp_path / "missing.wav"))[0] == "/error"
        assert ask("/nope")[0] == "/error"
        assert ask("/stop") == ("/stopped", [])
        thread.join(timeout=5)
        assert not thread.is_alive()
    finally:
        server.stop()
        thread.join(timeout=5)
        rx.close()
        tx.close()


def test_macros(tiny_flow_reg, small_dataset, tmp_path):
    pytest.importorskip("matplotlib")
    from acids_flowsynth.cli import main

    args = ["macros", str(tiny_flow_reg), "-o", str(tmp_path / "m"), "--data", str(small_dataset)]
    r = CliRunner().invoke(main, [*args, "--controls", "2", "--steps", "3", "--duration", "1"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[-1])
    assert rec["kind"] == "macros" and rec["axes"] == "pca" and len(rec["controls"]) == 2
    import soundfile as sf

    for c in rec["controls"]:
        info = sf.info(c["wav"])
        assert info.frames == 3 * 16000 and info.samplerate == 16000
        assert (tmp_path / "m" / f"macro-{c['index']}.png").stat().st_size > 1000
        assert set(c["moves"]) <= {"filter_cutoff", "env1_attack", "osc_mix"}
