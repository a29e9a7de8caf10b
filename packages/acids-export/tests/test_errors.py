"""Exporter failures: one short line on stderr, nothing on stdout (it carries records)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

# registers the Unfolder exportable in-process, then runs the real console entry point
_RUN = """
import sys
from bad_models import Unfolder, model_checkpoint
from pathlib import Path
ckpt = model_checkpoint(Path(sys.argv[1]), "unfolder", Unfolder)
from acids_export.cli import main
sys.argv = ["acids-export", *sys.argv[2:], str(ckpt)]
main()
"""


def _run(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-c", _RUN, str(tmp_path), *args],
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=180,
    )


def test_unsupported_operator_is_one_line_and_stdout_stays_clean(tmp_path):
    run = _run(tmp_path, "onnx", "--profile", "desktop")
    assert run.returncode == 65
    assert run.stdout == "", run.stdout[:500]  # the exporter's graph dump must not reach the record stream
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("acids-export: error: forward does not export to ONNX opset 17: ")
    assert "operator Unfold" in line and "Caused by" not in line and "%" not in line
    assert len(line) < 300


def test_verbose_keeps_the_details_on_stderr(tmp_path):
    run = _run(tmp_path, "-v", "onnx", "--profile", "desktop")
    assert run.returncode == 65 and run.stdout == ""
    assert "Caused by" in run.stderr  # the full exporter message, at -v only
    assert run.stderr.strip().splitlines()[-1].startswith("acids-export: error: forward does not export")
