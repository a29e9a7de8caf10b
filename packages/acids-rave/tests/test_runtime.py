"""keep_freed_memory: freed tensor memory is reused, not re-faulted from the kernel (glibc)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from acids_rave import cli, runtime


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


# one fresh process per setting: allocate, fill and free a 64 MiB tensor, then a 48 MiB one (a layer's
# output, then the next one's), count the minor page faults of the second (glibc's defaults mmap both,
# and unmap the first on free)
PROBE = """
import json, resource, sys
from acids_rave.runtime import keep_freed_memory
applied = keep_freed_memory()
import torch
def round_(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(n)
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
round_(16 * 2**20)
print(json.dumps({"applied": applied, "faults": round_(12 * 2**20)}))
"""


def _probe(env_malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ACIDS_MALLOC"}
    if env_malloc is not None:
        env["ACIDS_MALLOC"] = env_malloc
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _transparent_huge_pages_always() -> bool:
    p = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return p.exists() and "[always]" in p.read_text()


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_second_allocation_reuses_memory():
    pages = 48 * 2**20 // 4096
    kept = _probe(None)
    assert kept["applied"] is True
    # the 48 MiB tensor lands in memory the 64 MiB one freed: (almost) no page is faulted again
    assert kept["faults"] < 0.05 * pages, kept
    system = _probe("system")
    assert system["applied"] is False
    if not _transparent_huge_pages_always():  # with 2 MiB pages everywhere the control faults 24 times
        # the control: glibc's default unmaps the first tensor, the second faults every page afresh
        assert system["faults"] > 0.5 * pages, system


def test_cli_applies_it(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    result = CliRunner().invoke(cli.main_group, ["info", "/nonexistent.ckpt"])
    assert calls == [1]
    assert result.exit_code != 0  # the command itself still runs (and reports the missing file)


def test_opt_out_and_idempotent(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setenv("ACIDS_MALLOC", "system")
    assert runtime.keep_freed_memory() is False
    monkeypatch.delenv("ACIDS_MALLOC")
    assert runtime.keep_freed_memory() is False  # decided once per process
