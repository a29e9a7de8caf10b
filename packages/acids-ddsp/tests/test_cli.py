"""CLI: train from a real (tiny) acids-preprocess dataset, bit-exact resume, transfer, info."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from acids_ddsp import checkpoint
from acids_ddsp.cli import main
from acids_ddsp.model import DDSP

PHRASE = Path("/work/shared/data/phrases/16000/violin_phrases.flac")
OPTS = [
    "--no-tensorboard",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.crop_seconds=0.5",
]
TRAIN = ["--config", "tiny", *OPTS]
TRAIN_AE = ["--config", "tiny-ae", *OPTS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    sf = pytest.importorskip("soundfile")
    exe = Path(sys.executable).with_name("acids-preprocess")
    if not exe.exists():
        pytest.skip("acids-preprocess (acids-data) is not installed")
    if not PHRASE.exists():
        pytest.skip(f"{PHRASE} is not here")
    root = tmp_path_factory.mktemp("ddsp_data")
    x, sr = sf.read(PHRASE, start=2 * 16000, frames=8 * 16000, dtype="float32")
    sf.write(root / "a.wav", x[: 4 * sr], sr)
    sf.write(root / "b.wav", x[4 * sr :], sr)
    args = [str(root / "a.wav"), str(root / "b.wav"), "-o", str(root / "data"), "--sample-rate", "16000"]
    args += ["--chunk", "16384", "--feature-hop", "64", "-j", "1"]
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return root


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("train_args", [TRAIN, TRAIN_AE], ids=["tiny", "tiny-ae"])
def test_train_resumes_bit_for_bit_and_emits_a_checkpoint(dataset, tmp_path, train_args):
    runner = CliRunner()
    straight = runner.invoke(
        main, ["train", str(dataset / "data"), "-o", str(tmp_path / "a"), "--steps", "4", *train_args]
    )
    assert straight.exit_code == 0, straight.output
    (rec,) = _records(straight.stdout)
    assert rec["kind"] == "checkpoint" and Path(rec["path"]).exists()
    for steps in ("2", "4"):  # a run stopped after 2 steps, then continued
        r = runner.invoke(
            main, ["train", str(dataset / "data"), "-o", str(tmp_path / "b"), "--steps", steps, *train_args]
        )
        assert r.exit_code == 0, r.output
    a = checkpoint.read(tmp_path / "a" / "last.ckpt")["payload"]
    b = checkpoint.read(tmp_path / "b" / "last.ckpt")["payload"]
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["stats"]["voiced_frames"] > 0
    assert [s for s, _ in b["history"]] == [1, 2, 3, 4]  # the loss history survives the resume
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "b" / "plots" / "step-0000004.png").stat().st_size > 1000


def test_transfer_writes_audio_and_a_record(dataset, tmp_path):
    sf = pytest.importorskip("soundfile")
    runner = CliRunner()
    r = runner.invoke(
        main, ["train", str(dataset / "data"), "-o", str(tmp_path / "run"), "--steps", "1", *TRAIN]
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.wav"
    r = runner.invoke(
        main, ["transfer", str(tmp_path / "run" / "last.ckpt"), str(dataset / "a.wav"), str(out)]
    )
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert rec["kind"] == "audio" and rec["frames"] == 4 * 16000
    if importlib.util.find_spec("matplotlib"):
        assert Path(rec["plot"]) == out.with_suffix(".png").resolve() and out.with_suffix(".png").exists()
    y, sr = sf.read(out)
    assert sr == 16000 and len(y) == 4 * 16000 and np.isfinite(y).all()


def test_autoencoder_train_stores_the_mean_z_and_transfer_uses_z(dataset, tmp_path):
    """tiny-ae: training stores the mean z of its data; transfer encodes the source (or --mean-z)."""
    sf = pytest.importorskip("soundfile")
    from acids_ddsp.train import mean_latent

    runner = CliRunner()
    r = runner.invoke(
        main, ["train", str(dataset / "data"), "-o", str(tmp_path / "run"), "--steps", "3", *TRAIN_AE]
    )
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "run" / "last.ckpt"
    model = checkpoint.load(ckpt)
    assert model.has_encoder and model.z_mean.abs().sum() > 0
    from acids_data.dataset import ChunkDataset

    indices = ChunkDataset(dataset / "data", keys=("audio",), split="train").indices  # as training's
    torch.testing.assert_close(model.z_mean, mean_latent(model, dataset / "data", indices))
    outs = {}
    for flag in ([], ["--mean-z"]):
        out = tmp_path / f"out{len(flag)}.wav"
        r = runner.invoke(main, ["transfer", str(ckpt), str(dataset / "a.wav"), str(out), "--no-plot", *flag])
        assert r.exit_code == 0, r.output
        (rec,) = _records(r.stdout)
        assert rec["z"] == ("mean" if flag else "source")
        outs[rec["z"]] = sf.read(out, dtype="float32")[0]
    # offline reference: the same adjusted features, z encoded from the source audio
    from acids_data.features import compute_features
    from acids_ddsp.transfer import adjust

    x = sf.read(dataset / "a.wav", dtype="float32")[0][None]
    feats = compute_features(x, 16000, 64, ["loudness", "f0"])
    stats = checkpoint.read(ckpt)["payload"]["stats"]
    f0, loudness, _ = adjust(feats["f0"], feats["f0_confidence"], feats["loudness"], stats)
    with torch.no_grad():
        expected = model(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None], torch.from_numpy(x))
    np.testing.assert_allclose(outs["source"], expected[0, 0].numpy(), atol=1e-6)
    assert np.abs(outs["source"] - outs["mean"]).max() > 1e-4


def test_mean_z_needs_an_autoencoder(dataset, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main, ["train", str(dataset / "data"), "-o", str(tmp_path / "run"), "--steps", "1", *TRAIN]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        main, ["transfer", str(tmp_path / "run" / "last.ckpt"), str(dataset / "a.wav"), "o.wav", "--mean-z"]
    )
    assert r.exit_code == 2 and "no encoder" in r.output


def test_transfer_missing_input_exits_66(tmp_path):
    r = CliRunner().invoke(
        main, ["transfer", str(tmp_path / "none.ckpt"), str(tmp_path / "none.wav"), "o.wav"]
    )
    assert r.exit_code == 66


def test_info_counts_parameters():
    r = CliRunner().invoke(main, ["info", "--config", "full"])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert 4_000_000 < rec["parameters"] < 6_000_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "tiny", "--set", "synth.nope=1"], "synth.nope"),
        (["--config", "small-ae", "--set", "encoder.n_fft=1000"], "multiple of the hop"),
        (["--config", "tiny-ae", "--set", "encoder.n_mfcc=30"], "n_mfcc"),
    ],
)
def test_bad_config_is_a_usage_error(args, message):
    r = CliRunner().invoke(main, ["info", *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_info_of_the_autoencoder_preset():
    r = CliRunner().invoke(main, ["info", "--config", "small-ae"])
    assert r.exit_code == 0, r.output
    (rec,) = _records(r.stdout)
    assert rec["encoder_parameters"] == 19_532 and rec["config"]["encoder"]["kind"] == "mfcc"


def test_two_process_ddp_matches_one_process(dataset, tmp_path):
    """torchrun, 2 CPU processes over gloo, global batch 4 = 2 x 2: the weights of one process on batch 4."""
    args = ["train", str(dataset / "data"), "--steps", "3", *TRAIN, "--set", "train.batch_size=4"]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "acids_ddsp.cli", *args, "-o", str(tmp_path / "two")]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACIDS_PROGRESS="off")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = _records(p.stdout)  # one record, from rank 0
    assert rec["kind"] == "checkpoint"
    one = checkpoint.read(tmp_path / "one" / "last.ckpt")["payload"]
    two = checkpoint.read(tmp_path / "two" / "last.ckpt")["payload"]
    assert two["step"] == 3
    np.testing.assert_allclose([v for _, v in two["history"]], [v for _, v in one["history"]], rtol=1e-5)
    # float round-off differs with the batch shape (batched FFT/GEMM), and the L1 of log magnitudes turns
    # it into ~1e-3 relative gradient differences (measured: 1.2e-3; 0.17 if the ranks drew their own
    # training noise), which Adam passes on; so compare the whole update, not single weights:
    # ||d_two - d_one|| / ||d_one||, d = change from the (seeded, identical) initial weights
    torch.manual_seed(0)
    init = DDSP(checkpoint.config_of(checkpoint.read(tmp_path / "one" / "last.ckpt"))).state_dict()
    num = den = 0.0
    for k, v in one["model"].items():
        d_one, d_two = v - init[k], two["model"][k] - init[k]
        num += float((d_two - d_one).pow(2).sum())
        den += float(d_one.pow(2).sum())
    assert den > 0 and (num / den) ** 0.5 < 1e-2  # measured 3.5e-3 after 3 steps
