"""The dataset writer: round trip, shard splitting, crash safety (SIGKILL at every commit step), resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _store_fixtures import (
    FILES,
    PER_SHARD,
    SETTINGS,
    SHARD_BYTES,
    assert_tables_equal,
    expected_files,
    expected_table,
    file_table,
    make_files,
    read_table,
    sha_of,
    source,
    write_dataset,
)

import acids_core
from acids_core.errors import DataError, MissingInput, UsageError
from acids_data import store
from acids_data.reader import ShardReader
from acids_data.store import ShardWriter, dataset_root, read_manifest, verify

FIXTURES = Path(__file__).with_name("_store_fixtures.py")


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """fsync guards against power loss, which no test simulates; the SIGKILLed children keep it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _writer(root: Path, **kw) -> ShardWriter:
    return ShardWriter(root, **{**SETTINGS, **kw}, shard_bytes=SHARD_BYTES)


def _leftovers(root: Path) -> list[str]:
    """Temporaries, uncommitted arrays and journal left in a dataset directory."""
    shards = root / "shards"
    markers = {p.stem for p in shards.glob("*.json")}
    out = [p.name for d in (root, shards) for p in d.iterdir() if ".tmp-" in p.name]
    out += [p.name for p in shards.glob("*.npy") if p.name.split(".")[0] not in markers]
    out += [store.JOURNAL] if (root / store.JOURNAL).exists() else []
    return out


# --------------------------------------------------------------------------------------------- round trip


def test_write_read_bit_exact_and_split_at_shard_bytes(tmp_path):
    m = write_dataset(tmp_path / "ds")
    assert_tables_equal(read_table(tmp_path / "ds"), expected_table())
    assert file_table(m) == expected_files()
    # 45 chunks at 8 a shard, whatever the add_chunks call sizes were
    assert [s["n"] for s in m["shards"]] == [8, 8, 8, 8, 8, 5]
    assert m["totals"] == {
        "chunks": 45,
        "seconds": 1.2,
        "files_ok": 12,
        "files_padded": 0,
        "files_skipped": 2,
    }
    assert m["complete"] is True and m["format"] == "acids-dataset" and m["format_version"] == 1
    for key in ("sample_rate", "channels", "chunk", "hop", "feature_hop", "features", "config", "dtype"):
        assert key in m
    # a source spans two shards
    idx = [json.loads((tmp_path / "ds/shards" / f"{s['name']}.json").read_text()) for s in m["shards"]]
    spans = [sha for sha in {s["sha"] for s in FILES if s["sha"]} if sum(sha in i["files"] for i in idx) >= 2]
    assert spans
    # plain numpy reads the shards: int16 (n, C, L) with the exact samples
    a = np.load(tmp_path / "ds/shards/part-000-00000.audio.npy", mmap_mode="r")
    assert a.dtype == np.int16 and a.shape == (8, 2, 256)
    np.testing.assert_array_equal(a[:3], source(FILES[0])[0])
    assert np.load(tmp_path / "ds/shards/part-000-00000.mel.npy").dtype == np.float16
    assert verify(tmp_path / "ds", checksums=True) == []
    assert _leftovers(tmp_path / "ds") == []


def test_real_audio_chunks_round_trip(tmp_path, shared_data):
    import soundfile as sf

    L, fh = 16384, 256
    settings = {**SETTINGS, "sample_rate": 16000, "channels": 1, "chunk": L, "hop": L, "feature_hop": fh}
    settings["feature_keys"] = ["loudness"]
    expected = {}
    with ShardWriter(tmp_path / "ds", **settings, shard_bytes=5 * (2 * L + 4 * L // fh)) as w:
        for name in ("cello", "flute", "trumpet"):
            path = shared_data / "phrases" / "16000" / f"{name}_phrases.flac"
            x, sr = sf.read(path, frames=8 * L + 1000, dtype="int16", always_2d=True)
            assert sr == 16000
            n = len(x) // L
            audio = np.ascontiguousarray(x[: n * L, :1].T.reshape(1, n, L).transpose(1, 0, 2))  # (n, 1, L)
            frames = audio.reshape(n, L // fh, fh).astype(np.float64) / 32768
            loud = (10 * np.log10(np.mean(frames**2, axis=-1) + 1e-10)).astype(np.float32)  # (n, F)
            sha = sha_of(name)
            w.add_chunks(sha, str(path), audio, {"loudness": loud}, 0, [i * L for i in range(n)])
            w.finish_file(
                {"path": str(path), "sha256": sha, "status": "ok", "chunks": n, "duration": n * L / sr}
            )
            expected[sha] = (audio, loud)
    m = read_manifest(tmp_path / "ds")
    assert len(m["shards"]) == 5 and m["totals"]["chunks"] == 24  # 3 x 8 chunks at 5 a shard
    r = ShardReader(tmp_path / "ds")
    for i in range(len(r)):
        _, ci, start = r.source(i)
        audio, loud = expected[r.source_sha256(i)]
        item = r[i]
        np.testing.assert_array_equal(item["audio"], audio[ci].astype(np.float32) / 32768)
        np.testing.assert_array_equal(item["loudness"], loud[ci])
        assert start == ci * L
    assert np.abs(r[3]["audio"]).max() > 0.01  # real audio, not silence


# --------------------------------------------------------------------------------------------- crash safety


def _child(root: Path, kill: str, *, slow: bool = False, env: dict | None = None) -> subprocess.Popen:
    paths = [str(Path(store.__file__).parents[1]), str(Path(acids_core.__file__).parents[1])]
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, str(FIXTURES), str(root), kill] + (["slow"] if slow else [])
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def _run_killed(root: Path, kill: str) -> None:
    p = _child(root, kill)
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"{kill} was never reached (rc {p.returncode}): {err.decode()}"


KILL_POINTS = [
    "add:4",  # chunks buffered, nothing of them committed
    "tmp:7",  # second shard: an array written to its temporary, not renamed
    "rename:6",  # second shard: first array renamed, the others not written
    "rename:10",  # second shard: every array renamed, the marker not written
    "marker:2",  # second shard's marker written, the manifest not rewritten
    "manifest:4",  # after a manifest write
    "skip:1",  # right after a skipped file was recorded (journal)
    "torn:2",  # half a journal line on disk
    "finish:6",  # after finish_file of a file whose chunks are still buffered
]


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_sigkill_then_resume_equals_clean_run(tmp_path, kill):
    root = tmp_path / "ds"
    _run_killed(root, kill)
    m = write_dataset(root)  # the re-run, same inputs
    assert _leftovers(root) == []
    assert_tables_equal(read_table(root), expected_table())  # no chunk lost, none twice
    assert file_table(m) == expected_files()
    assert m["totals"]["chunks"] == 45 and m["complete"]
    assert verify(root, checksums=True) == []


def test_a_skip_survives_a_kill_without_redoing_the_file(tmp_path):
    root = tmp_path / "ds"
    _run_killed(root, "skip:1")  # killed right after skipping FILES[3], before any manifest write
    assert (root / store.JOURNAL).exists()
    w = _writer(root)  # opening folds the journal into the manifest
    assert w.file_status(FILES[3]["sha"])["reason"] == "unreadable: test"
    assert not (root / store.JOURNAL).exists()
    assert any(e["path"] == FILES[3]["path"] for e in read_manifest(root)["files"])
    w.close(complete=False)


def test_opening_removes_temporaries_and_uncommitted_arrays(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, FILES[:3])
    junk = [root / "shards" / "part-000-00042.audio.npy", root / "shards" / ".part-000-00001.mel.npy.tmp-9-9"]
    junk += [root / ".manifest.json.tmp-9-9"]
    for p in junk:
        p.write_bytes(b"left by a killed run")
    keep = sorted(p.name for p in (root / "shards").iterdir() if p not in junk)
    _writer(root).close()
    assert sorted(p.name for p in (root / "shards").iterdir()) == keep
    assert not any(p.exists() for p in junk)


def test_two_kills_in_a_row_then_resume(tmp_path):
    root = tmp_path / "ds"
    _run_killed(root, "rename:8")
    _run_killed(root, "marker:3")  # the second run resumes, then dies too
    m = write_dataset(root)
    assert_tables_equal(read_table(root), expected_table())
    assert file_table(m) == expected_files() and verify(root) == []


def test_external_sigkill_mid_run(tmp_path):
    root = tmp_path / "ds"
    p = _child(root, "-", slow=True, env={"STORE_TEST_DELAY": "0.02"})
    deadline = time.monotonic() + 60
    while len(list((root / "shards").glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    m = read_manifest(root)
    assert not m["complete"] and m["totals"]["chunks"] < 45
    m = write_dataset(root)
    assert_tables_equal(read_table(root), expected_table())
    assert file_table(m) == expected_files() and _leftovers(root) == []


def test_a_killed_run_is_marked_incomplete_and_readable(tmp_path):
    root = tmp_path / "ds"
    _run_killed(root, "manifest:4")
    m = read_manifest(root)
    assert m["complete"] is False
    r = ShardReader(root)
    assert len(r) == m["totals"]["chunks"] == sum(s["n"] for s in m["shards"]) > 0
    r[len(r) - 1]


# --------------------------------------------------------------------------------------------- resume rules


def test_resume_with_other_settings_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, FILES[:3])
    with pytest.raises(UsageError, match=r"--sample-rate 8000 \(this run: 16000\); use another -o"):
        _writer(root, sample_rate=16000)
    with pytest.raises(UsageError, match="--chunk 256"):
        _writer(root, chunk=512)
    with pytest.raises(UsageError, match="features f0,f0_confidence,loudness,mel"):
        _writer(root, feature_keys=["loudness"])
    with pytest.raises(UsageError, match="config pad=zero"):
        _writer(root, config={**SETTINGS["config"], "pad": "skip"})
    with pytest.raises(UsageError, match="feature settings"):
        _writer(root, features_desc={"loudness": {"unit": "sones"}})
    # operational keys (workers, shard, ...) may change; so may the feature order
    w = _writer(
        root,
        config={**SETTINGS["config"], "workers": 8, "shard": "0/1"},
        feature_keys=SETTINGS["feature_keys"][::-1],
    )
    assert w.done_chunks(FILES[0]["sha"]) == 3
    w.close()


def test_add_chunks_is_idempotent_on_a_prefix_and_refuses_gaps(tmp_path):
    spec = {"path": "a.wav", "sha": sha_of("a"), "n": 7}
    audio, feats, starts = source(spec)
    sl = lambda a, b: (audio[a:b], {k: v[a:b] for k, v in feats.items()}, a, starts[a:b])  # noqa: E731
    with _writer(tmp_path / "ds") as w:
        w.add_chunks(spec["sha"], "a.wav", *sl(0, 5))
        w.add_chunks(spec["sha"], "a.wav", *sl(0, 7))  # 0..4 again: dropped, 5..6 added
        w.add_chunks(spec["sha"], "a.wav", *sl(3, 6))  # nothing new
        with pytest.raises(ValueError, match="chunk 9 added before chunk 7"):
            w.add_chunks(spec["sha"], "a.wav", audio[:1], {k: v[:1] for k, v in feats.items()}, 9, [0])
        with pytest.raises(ValueError, match="says 6 chunks but 7 were added"):
            w.finish_file({"path": "a.wav", "sha256": spec["sha"], "status": "ok", "chunks": 6})
        w.finish_file({"path": "a.wav", "sha256": spec["sha"], "status": "ok", "chunks": 7})
    assert_tables_equal(read_table(tmp_path / "ds"), expected_table([spec]))


def test_add_chunks_checks_its_arguments(tmp_path):
    audio, feats, starts = source({"sha": sha_of("a"), "n": 2})
    with _writer(tmp_path / "ds") as w:
        with pytest.raises(ValueError, match="int16"):
            w.add_chunks("s", "a", audio.astype(np.float32), feats, 0, starts)
        with pytest.raises(ValueError, match=r"\(n, 2, 256\)"):
            w.add_chunks("s", "a", audio[:, :1], feats, 0, starts)
        with pytest.raises(ValueError, match="feature_keys"):
            w.add_chunks("s", "a", audio, {"loudness": feats["loudness"]}, 0, starts)
        with pytest.raises(ValueError, match="mel"):
            w.add_chunks("s", "a", audio, {**feats, "mel": feats["mel"][..., :-1]}, 0, starts)
        with pytest.raises(ValueError, match="starts"):
            w.add_chunks("s", "a", audio, feats, 0, starts[:1])


def test_file_entry_waits_for_its_chunks_to_commit(tmp_path):
    spec = {"path": "a.wav", "sha": sha_of("a"), "n": 3}
    audio, feats, starts = source(spec)
    w = _writer(tmp_path / "ds")
    w.add_chunks(spec["sha"], "a.wav", audio, feats, 0, starts)
    w.finish_file({"path": "a.wav", "sha256": spec["sha"], "status": "padded", "chunks": 3, "reason": "tail"})
    assert w.file_status(spec["sha"]) is None  # its chunks are only buffered
    assert read_manifest(tmp_path / "ds")["files"] == []
    w.flush()
    assert w.file_status(spec["sha"])["status"] == "padded" and w.done_chunks(spec["sha"]) == 3
    assert read_manifest(tmp_path / "ds")["files"][0]["reason"] == "tail"
    m = w.close()
    assert m["totals"]["files_ok"] == m["totals"]["files_padded"] == 1


def test_duplicate_content_is_stored_once(tmp_path):
    spec = {"path": "a.wav", "sha": sha_of("a"), "n": 3}
    audio, feats, starts = source(spec)
    with _writer(tmp_path / "ds") as w:
        for path in ("a.wav", "copy-of-a.wav"):
            w.add_chunks(spec["sha"], path, audio, feats, 0, starts)
            w.finish_file({"path": path, "sha256": spec["sha"], "status": "ok", "chunks": 3})
    m = read_manifest(tmp_path / "ds")
    assert m["totals"]["chunks"] == 3
    assert {(e["path"], e["status"]) for e in m["files"]} == {("a.wav", "ok"), ("copy-of-a.wav", "skipped")}
    reasons = {e["path"]: e["reason"] for e in m["files"]}
    assert reasons["copy-of-a.wav"] == "duplicate of a.wav (same content)" and reasons["a.wav"] is None


def test_incremental_run_adds_files_and_keeps_the_old_ones(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, FILES[:5])
    before = read_table(root)
    m = write_dataset(root, FILES)  # more inputs: the first five are skipped as done
    assert_tables_equal(read_table(root), expected_table())
    assert all(
        np.array_equal(before[k]["audio"], v["audio"]) for k, v in read_table(root).items() if k in before
    )
    assert file_table(m) == expected_files()


def test_a_failed_commit_keeps_the_buffer(tmp_path, monkeypatch):
    spec = {"path": "a.wav", "sha": sha_of("a"), "n": 11}
    audio, feats, starts = source(spec)
    real, calls = store.write_npy, []

    def disk_full(path, *a):
        calls.append(path)
        if len(calls) == 3:  # the third array of the first shard
            raise OSError(28, "No space left on device")
        return real(path, *a)

    monkeypatch.setattr(store, "write_npy", disk_full)
    w = _writer(tmp_path / "ds")
    with pytest.raises(OSError, match="No space"):
        w.add_chunks(spec["sha"], "a.wav", audio, feats, 0, starts)  # 11 chunks: one shard of 8 is due
    assert list((tmp_path / "ds" / "shards").iterdir()) == [] and w.done_chunks(spec["sha"]) == 0
    w.finish_file({"path": "a.wav", "sha256": spec["sha"], "status": "ok", "chunks": 11})
    w.close()  # the space is back: everything buffered is committed
    assert_tables_equal(read_table(tmp_path / "ds"), expected_table([spec]))


def test_one_writer_per_directory(tmp_path):
    w = _writer(tmp_path / "ds")
    with pytest.raises(UsageError, match="being written by another"):
        _writer(tmp_path / "ds")
    w.close()
    _writer(tmp_path / "ds").close()


def test_exception_in_the_caller_keeps_buffered_chunks(tmp_path):
    spec = {"path": "a.wav", "sha": sha_of("a"), "n": 3}
    audio, feats, starts = source(spec)
    with pytest.raises(RuntimeError), _writer(tmp_path / "ds") as w:
        w.add_chunks(spec["sha"], "a.wav", audio, feats, 0, starts)
        raise RuntimeError("the orchestrator broke")
    m = read_manifest(tmp_path / "ds")
    assert m["complete"] is False and m["totals"]["chunks"] == 3


def test_shards_without_manifest_are_refused(tmp_path):
    write_dataset(tmp_path / "ds", FILES[:2])
    (tmp_path / "ds" / "manifest.json").unlink()
    with pytest.raises(UsageError, match=r"no manifest\.json"):
        _writer(tmp_path / "ds")


# --------------------------------------------------------------------------------------------- manifest


def test_read_manifest_errors(tmp_path):
    with pytest.raises(MissingInput):
        read_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an acids dataset"):
        read_manifest(tmp_path / "empty")
    write_dataset(tmp_path / "ds", FILES[:2])
    path = tmp_path / "ds" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "format_version": 2}))
    with pytest.raises(DataError, match="format_version 2 is newer"):
        read_manifest(tmp_path / "ds")
    path.write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest"):
        read_manifest(tmp_path / "ds")


def test_dataset_root_accepts_dir_manifest_and_record(tmp_path):
    write_dataset(tmp_path / "ds", FILES[:2])
    d = tmp_path / "ds"
    assert dataset_root(d) == dataset_root(str(d / "manifest.json")) == d
    assert dataset_root({"kind": "dataset", "version": 1, "path": str(d)}) == d
    with pytest.raises(DataError, match="expected a 'dataset' record"):
        dataset_root({"kind": "checkpoint", "path": str(d)})


def test_verify_finds_damage(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, FILES[:3])
    p = root / "shards" / "part-000-00000.loudness.npy"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    assert verify(root) == []  # shapes are fine
    assert any("sha256 mismatch" in x for x in verify(root, checksums=True))


@pytest.mark.parametrize("n_files", [1, 40])
def test_chunks_per_shard_follow_shard_bytes(tmp_path, n_files):
    files = make_files([2] * n_files)
    m = write_dataset(tmp_path / "ds", files, per_call=2)
    ns = [s["n"] for s in m["shards"]]
    assert sum(ns) == 2 * n_files and all(n == PER_SHARD for n in ns[:-1]) and 0 < ns[-1] <= PER_SHARD
