import io
import logging

import click
import pytest
from click.testing import CliRunner

from acids_core.cli import AcidsGroup, verbosity_options
from acids_core.log import Progress, get_logger, setup_logging


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_a_bar_on_a_terminal():
    setup_logging(0, prog="t", stream=io.StringIO())
    stream = FakeTTY()
    with Progress(total=4, desc="preprocess", unit="files", stream=stream) as p:
        for _ in range(4):
            p.update(1, loss=0.5)
    text = stream.getvalue()
    assert "[########################] preprocess: 4/4 files (100%)" in text
    assert "loss=0.5" in text
    assert text.endswith("\n")
    setup_logging(-1, prog="t", stream=io.StringIO())  # -q: no bar
    quiet = FakeTTY()
    with Progress(total=4, stream=quiet) as p:
        p.update(4)
    assert quiet.getvalue() == ""


def test_progress_writes_periodic_lines_otherwise():
    log = io.StringIO()
    setup_logging(0, prog="t", stream=log)
    stream = io.StringIO()
    with Progress(total=3, desc="train", unit="steps", stream=stream, interval=0.0) as p:
        for _ in range(3):
            p.update(1)
    assert stream.getvalue() == ""  # nothing drawn on a non-terminal
    lines = [line for line in log.getvalue().splitlines() if "train:" in line]
    assert len(lines) >= 3
    assert lines[-1].startswith("t: train: 3/3 steps (100%)")


def test_progress_rate_counts_this_run_only(monkeypatch):
    """A resumed run starts at its step: the position shows it, the rate and time left do not count it."""
    clock = [100.0]
    monkeypatch.setattr("acids_core.log.time.monotonic", lambda: clock[0])
    p = Progress(total=1000, desc="train", unit="steps", mode="off", initial=900)
    clock[0] += 10.0
    p.update(20)
    assert p.n == 920
    assert p.rate == pytest.approx(2.0)  # 20 steps in 10 s, not 920
    assert "920/1000 steps (92%)" in p.text() and "eta 0:40" in p.text()


@click.group(cls=AcidsGroup)
@verbosity_options
def tool():
    pass


@tool.command()
def speak():
    log = get_logger("t")
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line")


def test_verbosity_flags_control_stderr_and_stdout_stays_clean():
    runner = CliRunner()
    normal = runner.invoke(tool, ["speak"])
    assert normal.stdout == ""
    assert "info line" in normal.stderr and "debug line" not in normal.stderr
    quiet = runner.invoke(tool, ["-q", "speak"])
    assert "info line" not in quiet.stderr and "warning line" in quiet.stderr
    verbose = runner.invoke(tool, ["-v", "speak"])
    assert "debug line" in verbose.stderr
    for h in list(logging.getLogger().handlers):
        if getattr(h, "_acids", False):
            logging.getLogger().removeHandler(h)


def test_package_loggers_follow_verbosity_and_other_libraries_stay_at_warning():
    buf = io.StringIO()
    setup_logging(0, prog="t", stream=buf)
    logging.getLogger("acids_data.audio").info("package info")
    logging.getLogger("somelib").info("library info")
    logging.getLogger("somelib").warning("library warning")
    text = buf.getvalue()
    assert "t: package info" in text
    assert "library info" not in text
    assert "t: warning: library warning" in text
    for h in list(logging.getLogger().handlers):
        if getattr(h, "_acids", False):
            logging.getLogger().removeHandler(h)


def test_subcommands_take_verbosity_flags_too():
    @click.group(cls=AcidsGroup)
    def grp():
        pass

    @grp.command()
    def verb():
        get_logger("t").info("info line")

    runner = CliRunner()
    assert "info line" not in runner.invoke(grp, ["verb", "-q"]).stderr
    assert "info line" not in runner.invoke(grp, ["-q", "verb"]).stderr
    assert "info line" in runner.invoke(grp, ["verb"]).stderr
    for h in list(logging.getLogger().handlers):
        if getattr(h, "_acids", False):
            logging.getLogger().removeHandler(h)
