"""ShardReader: random access across shard boundaries, crops on frame boundaries, provenance, pickling."""

from __future__ import annotations

import os
import pickle
import tracemalloc

import numpy as np
import pytest
from _store_fixtures import FH, FILES, KEYS, SETTINGS, L, expected_table, make_files, sha_of, write_dataset

from acids_core.errors import UsageError
from acids_data.reader import ShardReader
from acids_data.store import ShardWriter


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """fsync guards against power loss, which no test simulates; the SIGKILLed children keep it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader") / "ds"
    write_dataset(root)
    return root


def _ordered(files=FILES):
    """The expected chunks in dataset order (the writer keeps input order)."""
    table = expected_table(files)
    return [table[(s["sha"], i)] for s in files if "skip" not in s for i in range(s["n"])]


def test_random_access_at_shard_boundaries(ds):
    r = ShardReader(ds)
    want = _ordered()
    assert len(r) == len(want) == 45
    boundaries = [0, 7, 8, 9, 15, 16, 23, 24, 39, 40, 41, 44]  # 8 chunks a shard
    rng = np.random.default_rng(0)
    for i in [*boundaries, *rng.integers(0, 45, 30).tolist()]:
        got = r[i]
        assert sorted(got) == sorted(["audio", *KEYS])
        for k, v in got.items():
            assert v.dtype == np.float32
            np.testing.assert_array_equal(v, want[i][k], err_msg=f"chunk {i} {k}")
        assert r.source(i) == (want[i]["path"], r.source(i)[1], want[i]["start"])
    np.testing.assert_array_equal(r[-1]["audio"], want[-1]["audio"])
    np.testing.assert_array_equal(r[np.int64(9)]["mel"], want[9]["mel"])
    for bad in (45, -46):
        with pytest.raises(IndexError):
            r[bad]


def test_source_gives_path_chunk_index_and_start(ds):
    r = ShardReader(ds)
    seen = [r.source(i) for i in range(len(r))]
    files = [s for s in FILES if "skip" not in s and s["n"]]
    assert seen == [(s["path"], i, i * L) for s in files for i in range(s["n"])]
    assert [r.source_sha256(i) for i in range(3)] == [FILES[0]["sha"]] * 3
    shas, ids = r.file_index()
    assert shas == [s["sha"] for s in files]
    assert ids.tolist() == [j for j, s in enumerate(files) for _ in range(s["n"])]


def test_crop_keeps_features_aligned(ds):
    r = ShardReader(ds)
    full = r[20]
    for start, length in [(0, L), (32, 64), (FH * 3, L - FH * 3), (L - FH, FH)]:
        crop = r.read(20, start, length)
        np.testing.assert_array_equal(crop["audio"], full["audio"][:, start : start + length])
        f0, f1 = start // FH, (start + length) // FH
        for k in KEYS:
            np.testing.assert_array_equal(crop[k], full[k][..., f0:f1])
            assert crop[k].flags.c_contiguous and crop[k].dtype == np.float32
    with pytest.raises(ValueError, match="frame boundaries"):
        r.read(20, 5, 64)
    with pytest.raises(ValueError, match="frame boundaries"):
        r.read(20, 32, 33)
    with pytest.raises(ValueError, match="outside the chunk"):
        r.read(20, 224, 64)
    # audio alone crops at any sample
    a = ShardReader(ds, keys=["audio"]).read(20, 5, 7)
    np.testing.assert_array_equal(a["audio"], full["audio"][:, 5:12])


def test_keys_select_arrays(ds):
    r = ShardReader(ds, keys=["loudness"])
    assert list(r[3]) == ["loudness"] and r.keys == ["loudness"]
    with pytest.raises(UsageError, match="no array"):
        ShardReader(ds, keys=["pitch"])


def test_properties(ds):
    r = ShardReader(ds)
    assert (r.sample_rate, r.channels, r.chunk, r.feature_hop) == (8000, 2, 256, 32)
    assert r.manifest["totals"]["chunks"] == 45 and r.root == ds


def test_pickled_reader_holds_no_descriptors_and_reads_the_same(ds):
    r = ShardReader(ds)
    r[0], r[44]
    assert r._maps
    blob = pickle.dumps(r)
    assert len(blob) < 20000
    r2 = pickle.loads(blob)
    assert not r2._maps
    np.testing.assert_array_equal(r2[44]["audio"], r[44]["audio"])


def test_open_descriptors_are_bounded(ds):
    r = ShardReader(ds)
    r._max_maps = 3
    want = _ordered()
    for i in range(len(r)):
        np.testing.assert_array_equal(r[i]["mel"], want[i]["mel"])
        assert len(r._maps) <= 3
    r.close()
    assert not r._maps
    r[0]  # reopens


def test_read_makes_no_float64_temporary(tmp_path):
    # a float64 intermediate (the acids-dataset trap) would need 2x the output's bytes on top
    L_big = 1 << 15
    settings = {**SETTINGS, "chunk": L_big, "hop": L_big, "feature_keys": [], "feature_hop": None}
    with ShardWriter(tmp_path / "ds", **settings) as w:
        audio = np.random.default_rng(0).integers(-32768, 32768, (2, 2, L_big), dtype=np.int16)
        w.add_chunks(sha_of("a"), "a", audio, {}, 0, [0, L_big])
        w.finish_file({"path": "a", "sha256": sha_of("a"), "status": "ok", "chunks": 2})
    r = ShardReader(tmp_path / "ds")
    r[0]
    out_bytes = 2 * L_big * 4
    tracemalloc.start()
    try:
        x = r[1]["audio"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(x, audio[1] / np.float32(32768))
    assert peak < 1.8 * out_bytes, peak  # float32 output + the int16 read buffer


def test_empty_dataset(tmp_path):
    with ShardWriter(tmp_path / "ds", **SETTINGS):
        pass
    r = ShardReader(tmp_path / "ds")
    assert len(r) == 0 and r.file_index()[0] == []
    with pytest.raises(IndexError):
        r[0]


def test_mono_many_shards(tmp_path):
    files = make_files([1] * 20)
    settings = {**SETTINGS, "channels": 1, "feature_keys": [], "feature_hop": None}
    with ShardWriter(tmp_path / "ds", **settings, shard_bytes=1) as w:  # one chunk a shard
        for s in files:
            a = np.full((1, 1, L), int(s["sha"][:3], 16), np.int16)
            w.add_chunks(s["sha"], s["path"], a, {}, 0, [0])
            w.finish_file({"path": s["path"], "sha256": s["sha"], "status": "ok", "chunks": 1})
    r = ShardReader(tmp_path / "ds")
    assert len(r.manifest["shards"]) == 20 and r.keys == ["audio"]
    for i in (19, 0, 17, 18, 3):
        assert r[i]["audio"].shape == (1, L)
        assert r[i]["audio"][0, 0] * 32768 == int(files[i]["sha"][:3], 16)


def test_whole_chunk_read_when_the_chunk_is_not_a_multiple_of_the_feature_hop(tmp_path):
    from acids_data.store import ShardWriter

    rng = np.random.default_rng(0)
    audio = rng.integers(-2000, 2000, (3, 1, 1000), dtype=np.int16)
    mel = rng.standard_normal((3, 4, 1000 // 64)).astype(np.float32)
    with ShardWriter(
        tmp_path / "d",
        sample_rate=8000,
        channels=1,
        chunk=1000,
        hop=1000,
        feature_hop=64,
        feature_keys=["mel"],
        features_desc={},
        config={},
    ) as w:
        w.add_chunks("a" * 64, "/x.wav", audio, {"mel": mel}, 0, [0, 1000, 2000])
        w.finish_file({"path": "/x.wav", "sha256": "a" * 64, "status": "ok", "reason": None, "chunks": 3})
    r = ShardReader(tmp_path / "d")
    item = r[2]
    # 15 frames for 1000 samples at hop 64 (mel is stored as float16)
    np.testing.assert_array_equal(item["mel"], mel[2].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(item["audio"][0], audio[2, 0] / 32768.0)
    with pytest.raises(ValueError, match="frame boundaries"):
        r.read(2, 0, 999)
