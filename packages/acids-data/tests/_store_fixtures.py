"""Synthetic sources and a small orchestrator for the store/reader/dataset/merge tests.

Run as a script (``python _store_fixtures.py ROOT [KILL]``) it writes the standard synthetic dataset into
ROOT; ``KILL`` = ``what:k`` makes the process SIGKILL itself at the k-th such event (see ``_arm``), which is
how the crash-safety tests stop a writer at exact points of the commit protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acids_data import store
from acids_data.reader import ShardReader
from acids_data.store import ShardWriter

SR, C, L, FH = 8000, 2, 256, 32
F = L // FH
N_MELS = 4
KEYS = ["loudness", "f0", "f0_confidence", "mel"]
ROW_BYTES = C * L * 2 + 3 * F * 4 + N_MELS * F * 2  # 1184: bytes per chunk, all arrays
PER_SHARD = 8
SHARD_BYTES = PER_SHARD * ROW_BYTES
SETTINGS: dict[str, Any] = {
    "sample_rate": SR,
    "channels": C,
    "chunk": L,
    "hop": L,
    "feature_hop": FH,
    "feature_keys": KEYS,
    "features_desc": {"loudness": {"unit": "dB"}, "f0": {"method": "test"}, "mel": {"n_mels": N_MELS}},
    "config": {"pad": "zero", "trim_db": None, "workers": 2},
}


def sha_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def make_files(counts: Sequence[int], skips: Sequence[int] = (), prefix: str = "src") -> list[dict[str, Any]]:
    """File specs ``{"path", "sha", "n"}``; ``{"path", "sha", "skip": reason}`` at the ``skips`` positions."""
    files = []
    for i, n in enumerate(counts):
        path = f"{prefix}/{i:03d}.wav"
        if i in skips:
            files.append({"path": path, "sha": sha_of(path) if i % 2 else None, "skip": "unreadable: test"})
        else:
            files.append({"path": path, "sha": sha_of(f"content-{prefix}-{i}"), "n": n})
    return files


# 14 sources, 45 chunks: files span shards (8 chunks a shard); two are skipped (one without a sha256), one
# has no chunks.
FILES = make_files([3, 5, 1, 0, 11, 2, 7, 4, 9, 1, 6, 3, 2, 0], skips=(3, 8))


def source(spec: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Deterministic chunks of a source: int16 audio (n, C, L), features, start samples."""
    rng = np.random.default_rng(int(spec["sha"][:8], 16))
    n = spec["n"]
    audio = rng.integers(-32768, 32768, (n, C, L), dtype=np.int16)
    feats = {
        "loudness": rng.uniform(-60, 0, (n, F)).astype(np.float32),
        "f0": rng.uniform(50, 1000, (n, F)).astype(np.float32),
        "f0_confidence": rng.uniform(0, 1, (n, F)).astype(np.float32),
        "mel": rng.normal(size=(n, N_MELS, F)).astype(np.float16),
    }
    return audio, feats, [i * L for i in range(n)]


def write_dataset(
    root: Path,
    files: Sequence[dict[str, Any]] = FILES,
    *,
    per_call: int = 3,
    part: int = 0,
    shard_bytes: int = SHARD_BYTES,
    settings: dict[str, Any] | None = None,
    complete: bool = True,
    delay: float = 0.0,
) -> dict[str, Any]:
    """What the orchestrator does: skip done files, resume partial ones from done_chunks, close."""
    w = ShardWriter(root, **(settings or SETTINGS), part=part, shard_bytes=shard_bytes, created_by="test")
    for spec in files:
        sha = spec["sha"]
        if sha is not None and w.file_status(sha) is not None:
            continue
        if "skip" in spec:
            w.skip_file(spec["path"], sha, spec["skip"], duration=0.25)
            continue
        audio, feats, starts = source(spec)
        done = w.done_chunks(sha)
        for a in range(done, spec["n"], per_call):
            b = min(a + per_call, spec["n"])
            w.add_chunks(sha, spec["path"], audio[a:b], {k: v[a:b] for k, v in feats.items()}, a, starts[a:b])
            if delay:
                time.sleep(delay)
        entry = {"path": spec["path"], "sha256": sha, "status": "ok", "chunks": spec["n"], "duration": 0.1}
        entry.update(sample_rate=SR, channels=C)
        w.finish_file(entry)
    return w.close(complete=complete)


def expected_table(files: Sequence[dict[str, Any]] = FILES) -> dict[tuple[str, int], dict[str, Any]]:
    """Ground truth: ``{(sha, chunk index): {"path", "start", key: float32 array}}``."""
    table = {}
    for spec in files:
        if "skip" in spec or not spec["n"]:
            continue
        audio, feats, starts = source(spec)
        for i in range(spec["n"]):
            item = {"audio": audio[i].astype(np.float32) / 32768}
            item.update({k: v[i].astype(np.float32) for k, v in feats.items()})
            table[(spec["sha"], i)] = {"path": spec["path"], "start": starts[i], **item}
    return table


def read_table(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """What a dataset holds, keyed like :func:`expected_table`; asserts no (sha, index) appears twice."""
    r = ShardReader(root)
    table = {}
    for i in range(len(r)):
        path, ci, start = r.source(i)
        key = (r.source_sha256(i), ci)
        assert key not in table, f"duplicate chunk {key}"
        table[key] = {"path": path, "start": start, **r[i]}
    return table


def assert_tables_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        assert (g["path"], g["start"]) == (w["path"], w["start"]), key
        for k in ("audio", *KEYS):
            assert g[k].dtype == np.float32
            np.testing.assert_array_equal(g[k], w[k], err_msg=f"{key} {k}")


def file_table(manifest: dict[str, Any]) -> set[tuple]:
    return {(e["path"], e["sha256"], e["status"], e["chunks"]) for e in manifest["files"]}


def expected_files(files: Sequence[dict[str, Any]] = FILES) -> set[tuple]:
    return {
        (s["path"], s["sha"], "skipped" if "skip" in s else "ok", 0 if "skip" in s else s["n"]) for s in files
    }


# --------------------------------------------------------------------------------------------- the child


def _arm(spec: str) -> None:
    """Make this process SIGKILL itself at the k-th event ``what`` (``what:k``)."""
    what, k = spec.split(":")
    count = [0]

    def hit() -> None:
        count[0] += 1
        if count[0] == int(k):
            os.kill(os.getpid(), signal.SIGKILL)

    def npy(path: Any) -> bool:
        return str(path).endswith(".npy")

    commit_file, write_json = store.commit_file, store.atomic_write_json
    if what == "tmp":  # array written to its temporary, not renamed yet

        def patched_commit(tmp, path):
            if npy(path):
                hit()
            commit_file(tmp, path)

        store.commit_file = patched_commit
    elif what == "rename":  # array renamed into place; the shard's marker not written yet

        def patched_commit(tmp, path):
            commit_file(tmp, path)
            if npy(path):
                hit()

        store.commit_file = patched_commit
    elif what in ("marker", "manifest"):  # shard marker written / manifest written

        def patched_json(path, obj, indent=1):
            write_json(path, obj, indent=indent)
            if (Path(path).name == store.MANIFEST) == (what == "manifest"):
                hit()

        store.atomic_write_json = patched_json
    elif what == "torn":  # half a journal line written

        def patched_journal(self, entry):
            with open(self.root / store.JOURNAL, "a") as f:
                f.write(json.dumps(entry)[:20])
            hit()

        ShardWriter._journal = patched_journal
    elif what in ("add", "skip", "finish"):
        name = {"add": "add_chunks", "skip": "skip_file", "finish": "finish_file"}[what]
        original = getattr(ShardWriter, name)

        def patched(self, *a, **kw):
            original(self, *a, **kw)
            hit()

        setattr(ShardWriter, name, patched)
    else:
        raise SystemExit(f"unknown kill point {spec}")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        _arm(sys.argv[2])
    write_dataset(
        out, delay=float(os.environ.get("STORE_TEST_DELAY", "0")), per_call=1 if len(sys.argv) > 3 else 3
    )
    sys.exit(0)
