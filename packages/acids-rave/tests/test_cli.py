import json

import numpy as np
import pytest
from click.testing import CliRunner

from acids_rave.checkpoint import load_model
from acids_rave.cli import main_group


def test_info_of_presets():
    r = CliRunner().invoke(main_group, ["info", "small"])
    assert r.exit_code == 0, r.output
    assert "512x" in r.stdout and "5.44 ms" in r.stdout
    r = CliRunner().invoke(main_group, ["info", "tiny", "--json"])
    info = json.loads(r.stdout)
    assert info["compression_ratio"] == 64 and info["latency_samples"] == 112
    r = CliRunner().invoke(main_group, ["info", "nope.ckpt"])
    assert r.exit_code == 66


def test_train_from_a_piped_record_then_resume(dataset, tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "-o",
        str(run),
        "--config",
        "tiny",
        "--max-steps",
        "4",
        "--val-every",
        "2",
        "--threads",
        "1",
    ]
    r = CliRunner().invoke(main_group, args, input=dataset + "\n")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["kind"] == "checkpoint" and rec["step"] == 4 and rec["sample_rate"] == 48000
    model = load_model(rec["path"])
    assert model.config.sample_rate == 48000  # adopted from the dataset
    assert sorted(p.name for p in (run / "validation").iterdir()) == [
        "step-00000002.png",
        "step-00000004.png",
    ]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "validation" in json.loads(lines[1])
    resume = [*args[:-2], "--resume", "--max-steps", "6", "--phase1-steps", "5"]
    r = CliRunner().invoke(main_group, resume, input=dataset + "\n")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["step"] == 6 and rec["phase"] == 2
    # flags changed on --resume are kept in the checkpoint, so the next --resume does not forget them
    assert load_model(rec["path"]).config.train.phase1_steps == 5
    assert np.isfinite(
        [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    ).all()
    # the same command again, no flag: it continues the run rather than replacing it (as acids-ddsp does)
    again = [*args[:5], "--max-steps", "7", "--threads", "1"]
    r = CliRunner().invoke(main_group, again, input=dataset + "\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 7 and "continuing it" in r.stderr
    # --no-resume starts over, as asked
    r = CliRunner().invoke(main_group, [*args, "--no-resume"], input=dataset + "\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 4


def test_train_refuses_chunks_shorter_than_n_signal(dataset, tmp_path):
    args = ["train", "-o", str(tmp_path / "r"), "--config", "tiny", "--set", "train.n_signal=16384"]
    r = CliRunner().invoke(main_group, args, input=dataset + "\n")
    assert r.exit_code == 65 and "shorter than train.n_signal" in r.stderr


def test_train_needs_data(tmp_path):
    # an empty pipe (CliRunner's stdin) carries no dataset record: bad data, not a silent empty run
    r = CliRunner().invoke(main_group, ["train", "-o", str(tmp_path / "r"), "--config", "tiny"], input="")
    assert r.exit_code == 65 and "dataset" in r.stderr
    r = CliRunner().invoke(main_group, ["train", "-o", str(tmp_path / "r"), "--config", "nope"], input="")
    assert r.exit_code == 2


@pytest.fixture
def tiny_ckpt(tmp_path, tiny):
    import torch

    from acids_rave import checkpoint
    from acids_rave.model import Rave

    torch.manual_seed(0)
    return checkpoint.save(tmp_path / "tiny.ckpt", Rave(tiny))


def test_transfer_encode_decode(tiny_ckpt, tmp_path, real_audio):
    import soundfile as sf

    x, sr = real_audio(0.5)
    wav = tmp_path / "in.wav"
    sf.write(str(wav), x[0, 0].numpy(), sr)
    r = CliRunner().invoke(main_group, ["transfer", str(tiny_ckpt), str(wav), str(tmp_path / "out.wav")])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["kind"] == "audio" and rec["sample_rate"] == 44100
    y, sr_out = sf.read(rec["path"])
    assert sr_out == 44100 and abs(len(y) - x.shape[-1] / sr * 44100) < 2
    r = CliRunner().invoke(main_group, ["encode", str(tiny_ckpt), str(wav), "-o", str(tmp_path / "z")])
    assert r.exit_code == 0, r.output
    lat = json.loads(r.stdout)
    assert lat["kind"] == "latent" and lat["dims"] == 4
    r = CliRunner().invoke(main_group, ["decode", str(tiny_ckpt), "-o", str(tmp_path / "y")], input=r.stdout)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == lat["frames"] * 64


def test_stream_raw_pcm_matches_offline(tiny_ckpt):
    import torch

    model = load_model(tiny_ckpt)
    x = 0.3 * torch.randn(1, 1, 64 * 10 + 17)  # a short last block
    with torch.no_grad():
        offline = model(x)[0, 0].numpy()
    pcm = x[0, 0].numpy().astype("<f4").tobytes()
    r = CliRunner().invoke(main_group, ["stream", str(tiny_ckpt), "--block", "128"], input=pcm)
    assert r.exit_code == 0, r.stderr
    y = np.frombuffer(r.stdout_bytes, "<f4")
    assert y.shape == offline.shape
    np.testing.assert_allclose(y, offline, atol=1e-5, rtol=1e-4)


def _loud_tiny(tiny, fuse=True):
    """An untrained tiny model with PyTorch's init: its random biases give an output well above zero."""
    import dataclasses

    import torch

    from acids_rave.config import InitConfig
    from acids_rave.model import Rave

    torch.manual_seed(0)
    m = Rave(dataclasses.replace(tiny, init=InitConfig(zero_bias=False))).eval()
    if fuse:
        m.fuse()
    return m


def test_in_blocks_equals_one_call(tiny, real_audio):
    import torch

    m = _loud_tiny(tiny)
    r = m.compression_ratio
    x, _ = real_audio(0.5)
    x = x[..., : 40 * r + 37]  # a short last block
    with torch.inference_mode():
        before = m(x)
        for method, inp, block in (("forward", x, 8 * r), ("encode", x, 8 * r), ("decode", m.encode(x), 6)):
            whole = getattr(m, method)(inp)
            blocks = m.in_blocks(method, inp, block)
            assert blocks.shape == whole.shape, method
            assert (blocks - whole).abs().max() <= 1e-4 * whole.abs().max(), method
            assert whole.abs().max() > 1e-3  # a real output, not near-silence
        # the model is left offline (no streaming state): one call gives the same as before
        assert not any(getattr(p, "streaming", False) for p in m.modules())
        torch.testing.assert_close(m(x), before)
    with pytest.raises(ValueError, match="multiple of 64"):
        m.in_blocks("forward", x, 100)


def test_transfer_in_blocks(tmp_path, tiny, real_audio):
    import soundfile as sf

    from acids_rave import checkpoint

    ckpt = checkpoint.save(tmp_path / "loud.ckpt", _loud_tiny(tiny, fuse=False))
    x, sr = real_audio(1.0)
    wav = tmp_path / "in.wav"
    sf.write(str(wav), x[0, 0].numpy(), sr, subtype="FLOAT")
    outs = {}
    for block in ("0", "128", "4096"):
        out = tmp_path / f"out-{block}.wav"
        r = CliRunner().invoke(main_group, ["transfer", str(ckpt), str(wav), str(out), "--block", block])
        assert r.exit_code == 0, r.output
        outs[block], _ = sf.read(str(out), dtype="float32")
    # the WAV is 16-bit: blocks and one call agree to the last bit or so
    assert np.abs(outs["0"]).max() > 1e-2
    for block in ("128", "4096"):
        assert outs[block].shape == outs["0"].shape
        assert np.abs(outs[block] - outs["0"]).max() <= 2 / 32768, block
    bad = ["transfer", str(ckpt), str(wav), str(tmp_path / "x.wav"), "--block", "100"]
    r = CliRunner().invoke(main_group, bad)
    assert r.exit_code != 0 and "--block must be 0 or a positive multiple" in r.output
