"""Cross-package pipeline tests: the real console scripts joined by real bash pipes (nox -s pipeline).

Each test runs what a user types, on the built-in real audio, with `set -o pipefail`, and checks what
reaches the end of the pipe and the exit code of every stage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "assets" / "demo-audio"


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail\n{script}"], cwd=cwd, text=True, capture_output=True, timeout=600
    )


@pytest.fixture(autouse=True)
def _scripts_installed():
    for exe in ("acids-preprocess", "acids-data"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not on PATH: run through `nox -s pipeline`")


def test_preprocess_piped_into_inspect(tmp_path):
    res = bash(
        f"acids-preprocess '{AUDIO}' -o data --sample-rate 22050 --chunk 32768 | tee rec.jsonl"
        " | acids-data inspect --json",
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "rec.jsonl").read_text())
    summary = json.loads(res.stdout)
    assert record["kind"] == "dataset" and summary["chunks"] == record["chunks"] > 0
    assert summary["files_ok"] == 5 and summary["files_skipped"] == 0
    assert 0.6 < summary["features"]["f0"]["voiced_fraction"] <= 1.0


def test_audio_records_piped_into_preprocess(tmp_path):
    script = (
        f"python3 -c \"import json,pathlib; [print(json.dumps({{'kind':'audio','version':1,'path':str(p)}}))"
        f" for p in sorted(pathlib.Path('{AUDIO}').glob('*.flac'))[:2]]\""
        " | acids-preprocess -o data --sample-rate 16000 --chunk 16384 --features none"
    )
    res = bash(script, tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["files_ok"] == 2


def test_exit_codes_cross_the_pipe(tmp_path):
    res = bash(
        'acids-preprocess nowhere/ -o data | acids-data inspect; echo "status ${PIPESTATUS[*]}"', tmp_path
    )
    # each stage says what went wrong in one line and exits with its own code
    assert res.stdout.strip().endswith("status 66 65")
    assert "acids-preprocess: error: nowhere/: no such file or directory" in res.stderr
    assert "acids-data: error: no `dataset` record on stdin" in res.stderr
    assert "Traceback" not in res.stderr
    (tmp_path / "bad.wav").write_text("not audio")
    shutil.copy(AUDIO / "flute.flac", tmp_path / "flute.flac")
    res = bash("acids-preprocess bad.wav flute.flac -o d2 --features none | acids-data inspect", tmp_path)
    assert res.returncode == 65  # done, with a skipped file
    assert "skipped   1 file(s)" in res.stdout and "bad.wav" in res.stdout


def test_a_consumer_that_stops_reading_is_not_a_crash(tmp_path):
    res = bash(f"acids-preprocess '{AUDIO}' -o data --features none | head -c 10", tmp_path)
    assert "Traceback" not in res.stderr
    assert (tmp_path / "data" / "manifest.json").exists()  # committed work is kept


def test_preprocess_piped_into_rave_training(tmp_path):
    if shutil.which("acids-rave") is None:
        pytest.skip("acids-rave is not installed")
    res = bash(
        f"acids-preprocess '{AUDIO}/flute.flac' '{AUDIO}/cello.flac' -o data --sample-rate 22050"
        " --chunk 16384"
        " --features none -q | acids-rave train -o run --config tiny --max-steps 6 --phase1-steps 4 --batch 2"
        " --val-every 3 -q",
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout.splitlines()[-1])
    assert record["kind"] == "checkpoint" and record["step"] == 6
    assert Path(record["path"]).is_file()


def test_the_whole_chain_preprocess_train_export_check(tmp_path):
    for exe in ("acids-rave", "acids-export"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed")
    res = bash(
        f"acids-preprocess '{AUDIO}/trumpet.flac' -o data --sample-rate 22050 --chunk 16384"
        " --features none -q"
        " | acids-rave train -o run --config tiny --max-steps 4 --phase1-steps 2 --batch 2 --val-every 2 -q"
        " | acids-export -q onnx --profile rpi-bookworm --streaming -o model.onnx"
        " | acids-export -q check -",
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    artifact = json.loads(res.stdout.splitlines()[-1])
    assert artifact["kind"] == "artifact" and artifact["format"] == "onnx"
    assert artifact["profile"] == "rpi-bookworm" and artifact["streaming"] is True
    assert Path(artifact["path"]) == tmp_path / "model.onnx"
    for figures in artifact["figures"]["methods"].values():
        assert figures["max_abs_error"] < 1e-3
