"""Per-chunk arrays without a frame axis (``chunk_keys``): write, read, crop, resume, merge, verify, and
datasets written before they existed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _store_fixtures import SETTINGS, write_dataset

from acids_core.errors import UsageError
from acids_data.dataset import ChunkDataset
from acids_data.merge import merge
from acids_data.reader import ShardReader
from acids_data.store import ShardWriter, read_manifest, verify

SR, L, FH = 8000, 256, 32
F = L // FH
P = 5


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _writer(root: Path, **kw) -> ShardWriter:
    args = {
        "sample_rate": SR,
        "channels": 1,
        "chunk": L,
        "hop": L,
        "feature_hop": FH,
        "feature_keys": ("mel",),
        "chunk_keys": ("params", "label"),
        "features_desc": {"mel": {"n_mels": 4}, "params": {"names": [f"p{i}" for i in range(P)]}},
        "config": {"what": "test"},
        "shard_bytes": 3 * (L * 2 + 4 * F * 2 + P * 4 + 8),  # 3 chunks a shard
    }
    return ShardWriter(root, **{**args, **kw})


def _item(i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(i)
    audio = rng.integers(-3000, 3000, (1, 1, L)).astype(np.int16)
    mel = rng.standard_normal((1, 4, F)).astype(np.float32)
    return audio, {"mel": mel, "params": np.full((1, P), i / 10, np.float64) + np.arange(P), "label": [i]}


def _write(root: Path, ids, **kw) -> dict:
    with _writer(root, **kw) as w:
        for i in ids:
            audio, feats = _item(i)
            sha = f"{i:064x}"
            w.add_chunks(sha, f"src/{i}", audio, feats, 0, [0])
            w.finish_file({"path": f"src/{i}", "sha256": sha, "status": "ok", "chunks": 1, "duration": 0.032})
    return read_manifest(root)


def test_chunk_arrays_round_trip_without_a_frame_axis(tmp_path):
    m = _write(tmp_path / "ds", range(7))
    assert m["chunk_keys"] == ["params", "label"] and m["feature_keys"] == ["mel"]
    assert [s["n"] for s in m["shards"]] == [3, 3, 1]
    a = np.load(tmp_path / "ds/shards/part-000-00000.params.npy")
    assert a.shape == (3, P) and a.dtype == np.float32  # float64 stored as float32, no frame axis
    assert np.load(tmp_path / "ds/shards/part-000-00000.label.npy").dtype == np.int64
    r = ShardReader(tmp_path / "ds")
    assert r.keys == ["audio", "mel", "params", "label"] and r.chunk_keys == ["params", "label"]
    for i in range(7):
        item = r[i]
        np.testing.assert_array_equal(item["params"], (np.full(P, i / 10) + np.arange(P)).astype(np.float32))
        assert item["label"].shape == () and int(item["label"]) == i
        assert item["mel"].shape == (4, F)
    # a crop slices the audio and the frames, never a chunk array
    item = r.read(4, FH * 2, FH * 3)
    assert item["audio"].shape == (1, FH * 3) and item["mel"].shape == (4, 3)
    assert item["params"].shape == (P,) and int(item["label"]) == 4
    item["params"][:] = -1  # a copy
    assert r[4]["params"][0] == pytest.approx(0.4)
    assert ShardReader(tmp_path / "ds", keys=("params",)).read(6)["params"][0] == pytest.approx(0.6)
    ds = ChunkDataset(tmp_path / "ds", crop=FH * 4, gain_db=None)
    assert ds[2]["params"].shape == (P,) and ds[2]["mel"].shape == (4, 4)
    assert verify(tmp_path / "ds", checksums=True) == []


def test_chunk_arrays_are_checked(tmp_path):
    with _writer(tmp_path / "ds") as w:
        audio, feats = _item(0)
        with pytest.raises(ValueError, match="feature_keys \\+ chunk_keys"):
            w.add_chunks("a" * 64, "x", audio, {"mel": feats["mel"]}, 0, [0])
        with pytest.raises(ValueError, match="chunk array 'params' must be"):
            w.add_chunks("a" * 64, "x", audio, {**feats, "params": np.zeros((2, P))}, 0, [0])
        w.add_chunks("a" * 64, "x", audio, feats, 0, [0])
        with pytest.raises(ValueError, match="chunk array 'params': rows"):
            w.add_chunks("b" * 64, "y", audio, {**feats, "params": np.zeros((1, P + 1))}, 0, [0])
    with pytest.raises(ValueError, match="duplicate"):
        _writer(tmp_path / "other", chunk_keys=("mel",))


def test_resume_and_merge_keep_chunk_arrays(tmp_path):
    _write(tmp_path / "a", range(4))
    m = _write(tmp_path / "a", range(6))  # resumes: 4 done, 2 added
    assert m["totals"]["chunks"] == 6
    with pytest.raises(UsageError, match="chunk arrays"):
        _writer(tmp_path / "a", chunk_keys=("params",))
    _write(tmp_path / "b", range(6, 9))
    merged = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert merged["chunk_keys"] == ["params", "label"]
    r = ShardReader(tmp_path / "m")
    assert sorted(int(r[i]["label"]) for i in range(len(r))) == list(range(9))
    assert verify(tmp_path / "m") == []


def test_datasets_without_chunk_arrays_still_read_and_resume(tmp_path):
    """A dataset written before chunk arrays existed (no ``chunk_keys`` in its manifest) reads, verifies
    and resumes as before, and a writer without chunk keys writes an empty list."""
    root = tmp_path / "old"
    m = write_dataset(root)
    assert m["chunk_keys"] == []
    raw = json.loads((root / "manifest.json").read_text())
    del raw["chunk_keys"]
    (root / "manifest.json").write_text(json.dumps(raw))
    old = read_manifest(root)
    assert old["chunk_keys"] == [] and old["format_version"] == 1
    r = ShardReader(root)
    assert r.chunk_keys == [] and r.keys == ["audio", *SETTINGS["feature_keys"]]
    assert r[0]["mel"].shape[-1] == L // FH
    assert verify(root, checksums=True) == []
    with ShardWriter(root, **SETTINGS, shard_bytes=1 << 20) as w:  # resumes (same settings)
        assert w.done_chunks(next(iter(w.committed_chunks()))) > 0
