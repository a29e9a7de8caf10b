import io
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from acids_core.cli import EXIT_BROKEN_PIPE, AcidsGroup, verbosity_options
from acids_core.errors import DataError, Exit, MissingInput
from acids_core.records import (
    RECORD_VERSION,
    dumps,
    last_record,
    make_record,
    parse_record,
    read_records,
    write_record,
)


def test_make_and_write_one_line_per_record():
    out = io.StringIO()
    write_record(make_record("dataset", path="/abs/data", chunks=3), out)
    write_record(make_record("audio", path="/a.wav"), out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"kind": "dataset", "version": RECORD_VERSION, "path": "/abs/data", "chunks": 3}


def test_nan_is_refused_because_it_is_not_json():
    with pytest.raises(ValueError):
        dumps(make_record("x", loss=float("nan")))


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not a JSON record"),
        ("[1, 2]", "must be a JSON object"),
        ('{"version": 1}', "has no 'kind'"),
        ('{"kind": "audio"}', "no integer 'version'"),
        ('{"kind": "audio", "version": 99}', "newer than this tool reads"),
    ],
)
def test_malformed_records_name_the_line(line, reason):
    with pytest.raises(DataError) as e:
        parse_record(line, "in.jsonl", 7)
    assert reason in str(e.value)
    assert str(e.value).startswith("in.jsonl:7")
    assert e.value.code == Exit.DATA


def test_read_from_path_filters_kinds_and_skips_blank_lines(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text(
        "\n".join([dumps(make_record("shard", n=1)), "", dumps(make_record("dataset", path="a")), ""])
    )
    assert [r["kind"] for r in read_records(p)] == ["shard", "dataset"]
    assert [r["path"] for r in read_records(p, kind="dataset")] == ["a"]
    assert last_record(p, "dataset")["path"] == "a"
    with pytest.raises(DataError, match="no 'checkpoint' record"):
        last_record(p, "checkpoint")


def test_missing_path_is_exit_66(tmp_path):
    with pytest.raises(MissingInput):
        list(read_records(tmp_path / "nope.jsonl"))


@click.group(cls=AcidsGroup)
@verbosity_options
def demo():
    """A demo group."""


@demo.command()
@click.argument("source", required=False)
def consume(source):
    for rec in read_records(source):
        click.echo(rec["kind"])


def test_cli_malformed_stdin_gives_one_line_and_exit_65():
    result = CliRunner().invoke(demo, ["consume"], input='{"kind":"audio","version":1}\ngarbage\n')
    assert result.exit_code == 65
    assert result.stdout == "audio\n"
    err = result.stderr.strip().splitlines()
    assert len(err) == 1
    assert "error: <stdin>:2: not a JSON record" in err[0]


def test_broken_pipe_is_quiet_and_exits_141():
    # a real pipe: the consumer (head -1) exits after the first line
    code = (
        "import sys; sys.argv=['producer'];"
        "from acids_core.cli import AcidsCommand; import click;"
        "from acids_core.records import write_record, make_record\n"
        "@click.command(cls=AcidsCommand)\n"
        "def main():\n"
        "    for i in range(200000): write_record(make_record('audio', i=i, pad='x'*100))\n"
        "main()"
    )
    proc = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{sys.executable}" -c "$CODE" | head -1'],
        env={"CODE": code, "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(proc.stdout)["i"] == 0
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in proc.stderr
