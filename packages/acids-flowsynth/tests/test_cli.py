"""CLI: `render | train` through a real pipe, records on stdout, usage errors, infer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from acids_flowsynth.cli import main

EXE = Path(sys.executable).with_name("acids-flowsynth")


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_render_pipe_train(tmp_path):
    if not EXE.exists():
        pytest.skip("the acids-flowsynth console script is not installed")
    cmd = (
        f"set -o pipefail; {EXE} render --presets 24 --subset osc_mix,filter_cutoff --sample-rate 16000 "
        f"--duration 2 --hold 1.5 --threads 1 -o {tmp_path / 'data'} | "
        f"{EXE} train --config tiny --model cnn --epochs 2 --no-tensorboard --threads 1 -o {tmp_path / 'run'}"
    )
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (rec,) = records(r.stdout)
    assert rec["kind"] == "checkpoint" and rec["format"] == "acids-flowsynth" and rec["model"] == "cnn"
    assert Path(rec["path"]).is_file()
    assert "mse_n" in rec["metrics"] and "sc" in rec["metrics"]


def test_render_record_and_usage_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "render",
            "--presets",
            "10",
            "--subset",
            "osc_mix",
            "--duration",
            "1",
            "--hold",
            "0.5",
            "--sample-rate",
            "16000",
            "-o",
            str(tmp_path / "d"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    (rec,) = records(r.stdout)
    assert rec["kind"] == "dataset" and rec["chunks"] == 10 and rec["subset"] == ["osc_mix"]
    assert sum(rec["splits"].values()) == 10
    bad = runner.invoke(main, ["render", "--presets", "4", "--subset", "nope", "-o", str(tmp_path / "e")])
    assert bad.exit_code == 2 and "nope" in bad.stderr
    bad = runner.invoke(main, ["render", "--presets", "4", "--synth", "dx7", "-o", str(tmp_path / "e")])
    assert bad.exit_code == 2
    syn = runner.invoke(main, ["synths"])
    assert records(syn.stdout)[0]["name"] == "acids-sub"


def test_infer(small_dataset, tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("matplotlib")
    import torch

    from acids_flowsynth.config import preset, with_params
    from acids_flowsynth.synth import default_vector, get_backend
    from acids_flowsynth.train import train

    ckpt = train(
        with_params(preset("tiny"), 3),
        small_dataset,
        tmp_path / "run",
        tensorboard=False,
        epochs=1,
        evaluate_audio=False,
    )
    audio = get_backend("acids-sub").render(
        torch.tensor([default_vector(get_backend("acids-sub"))]), sample_rate=16000, duration=3.0, hold=2.0
    )
    sf.write(tmp_path / "in.wav", audio[0].numpy(), 16000)
    r = CliRunner().invoke(
        main,
        [
            "infer",
            str(ckpt),
            str(tmp_path / "in.wav"),
            "-o",
            str(tmp_path / "p.json"),
            "--render",
            str(tmp_path / "re.wav"),
            "--plot",
            str(tmp_path / "mel.png"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    (rec,) = records(r.stdout)
    assert set(rec["inferred"]) == {"filter_cutoff", "env1_attack", "osc_mix"}
    assert 30.0 <= rec["params"]["filter_cutoff"] <= 16000.0
    assert json.loads((tmp_path / "p.json").read_text())["params"] == rec["params"]
    assert (tmp_path / "mel.png").stat().st_size > 1000 and (tmp_path / "re.wav").exists()
    assert rec["sc"] >= 0
    assert abs(rec["pitch"]["midi"] - 60.0) < 0.3 and abs(rec["pitch"]["shift"]) < 0.3  # a C4 render
    shifted = CliRunner().invoke(main, ["infer", str(ckpt), str(tmp_path / "up.wav")])
    assert shifted.exit_code == 66  # no such file (MissingInput)
    from acids_flowsynth.pitch import shift_pitch

    sf.write(tmp_path / "up.wav", shift_pitch(audio[0].numpy(), 16000, 7.0), 16000)  # G4
    (up,) = records(CliRunner().invoke(main, ["infer", str(ckpt), str(tmp_path / "up.wav")]).stdout)
    assert abs(up["pitch"]["shift"] + 7.0) < 0.3
    (raw,) = records(
        CliRunner().invoke(main, ["infer", str(ckpt), str(tmp_path / "up.wav"), "--no-shift"]).stdout
    )
    assert raw["pitch"] == {"f0": None, "midi": None, "shift": 0.0}
