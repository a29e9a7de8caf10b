"""merge: parts of a --shard i/N run join into the dataset a single run makes."""

from __future__ import annotations

import errno
import os
import zlib

import pytest
from _store_fixtures import (
    FILES,
    SETTINGS,
    assert_tables_equal,
    expected_files,
    expected_table,
    file_table,
    make_files,
    read_table,
    write_dataset,
)

from acids_core.errors import UsageError
from acids_data import merge as merge_mod
from acids_data.merge import merge
from acids_data.store import ShardWriter, read_manifest, verify


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """fsync guards against power loss, which no test simulates; the SIGKILLed children keep it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _parts(tmp_path, n=3, files=FILES):
    """Write the parts of a ``--shard i/n`` run (partition by crc32 of the path)."""
    roots = []
    for i in range(n):
        mine = [s for s in files if zlib.crc32(s["path"].encode()) % n == i]
        assert mine
        write_dataset(tmp_path / f"part{i}", mine, part=i)
        roots.append(tmp_path / f"part{i}")
    return roots


def test_merge_of_three_parts_equals_a_single_run(tmp_path):
    parts = _parts(tmp_path)
    single = write_dataset(tmp_path / "single")
    m = merge(parts, tmp_path / "merged")
    assert_tables_equal(read_table(tmp_path / "merged"), read_table(tmp_path / "single"))
    assert_tables_equal(read_table(tmp_path / "merged"), expected_table())
    assert file_table(m) == file_table(single) == expected_files()
    assert m["totals"] == single["totals"]
    assert m["complete"] is True and [p["path"] for p in m["parts"]] == [str(p.absolute()) for p in parts]
    assert read_manifest(tmp_path / "merged") == m
    assert verify(tmp_path / "merged", checksums=True) == []
    # shard files are hard links of the parts' files
    s = m["shards"][0]
    src = tmp_path / "part0" / "shards" / f"{s['name']}.audio.npy"
    assert os.path.samefile(src, tmp_path / "merged" / "shards" / s["arrays"]["audio"])


def test_clashing_names_are_renamed_and_copy_works(tmp_path, monkeypatch):
    a, b = make_files([3, 9, 4], prefix="a"), make_files([5, 2], prefix="b")
    write_dataset(tmp_path / "a", a)  # both are part 0: the same shard names
    write_dataset(tmp_path / "b", b)

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(merge_mod.os, "link", no_link)
    m = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    names = [s["name"] for s in m["shards"]]
    assert names == ["part-000-00000", "part-000-00001", "part-000-00002"]  # b's part-000-00000 renamed
    assert_tables_equal(read_table(tmp_path / "m"), expected_table(a + b))
    s = m["shards"][-1]
    assert not os.path.samefile(
        tmp_path / "b/shards/part-000-00000.audio.npy", tmp_path / "m/shards" / s["arrays"]["audio"]
    )
    assert verify(tmp_path / "m", checksums=True) == []


def test_mismatched_settings_are_refused(tmp_path):
    write_dataset(tmp_path / "a", FILES[:3])
    settings = {**SETTINGS, "config": {**SETTINGS["config"], "trim_db": -60}}
    write_dataset(tmp_path / "b", FILES[3:6], settings=settings)
    write_dataset(tmp_path / "c", FILES[6:8], settings={**SETTINGS, "sample_rate": 16000})
    with pytest.raises(UsageError, match=r"config trim_db=-60 \(.*a: null\)"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    with pytest.raises(UsageError, match="--sample-rate 16000"):
        merge([tmp_path / "a", tmp_path / "c"], tmp_path / "m")
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_incomplete_parts_are_refused_unless_forced(tmp_path):
    write_dataset(tmp_path / "a", FILES[:3])
    write_dataset(tmp_path / "b", FILES[3:6], complete=False)
    with pytest.raises(UsageError, match="did not finish"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    m = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m", force=True)
    assert m["complete"] is False
    assert_tables_equal(read_table(tmp_path / "m"), expected_table(FILES[:6]))


def test_same_part_twice_and_existing_output_are_refused(tmp_path):
    write_dataset(tmp_path / "a", FILES[:3])
    with pytest.raises(UsageError, match="given twice"):
        merge([tmp_path / "a", tmp_path / "a" / "manifest.json"], tmp_path / "m")
    with pytest.raises(UsageError, match="one of the parts"):
        merge([tmp_path / "a"], tmp_path / "a")
    merge([tmp_path / "a"], tmp_path / "m")
    with pytest.raises(UsageError, match="already holds a dataset"):
        merge([tmp_path / "a"], tmp_path / "m")


def test_overlapping_parts_keep_each_source_once(tmp_path):
    # the same content under two paths landed in two parts: a single run would keep it once
    write_dataset(tmp_path / "a", FILES[:7])
    dup = [{**s, "path": "elsewhere/" + s["path"]} for s in FILES[4:7]]
    write_dataset(tmp_path / "b", dup + FILES[7:])
    m = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    assert_tables_equal(read_table(tmp_path / "m"), expected_table())
    skipped = {e["path"]: e["reason"] for e in m["files"] if e["status"] == "skipped"}
    assert {p for p in skipped if p.startswith("elsewhere/")} == {s["path"] for s in dup if "skip" not in s}
    assert m["totals"]["chunks"] == 45
    assert verify(tmp_path / "m") == []


def test_leftovers_of_a_killed_merge_are_replaced(tmp_path):
    write_dataset(tmp_path / "a", FILES[:3])
    (tmp_path / "m" / "shards").mkdir(parents=True)
    (tmp_path / "m" / "shards" / "part-000-00007.audio.npy").write_bytes(b"junk")
    (tmp_path / "m" / "shards" / ".part-000-00000.audio.npy.tmp-1-2").write_bytes(b"junk")
    merge([tmp_path / "a"], tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m" / "shards").iterdir()) == sorted(
        p.name for p in (tmp_path / "a" / "shards").iterdir()
    )


def test_merged_dataset_can_be_resumed_by_a_writer(tmp_path):
    write_dataset(tmp_path / "a", FILES[:4], part=0)
    write_dataset(tmp_path / "b", FILES[4:8], part=1)
    merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    m = write_dataset(tmp_path / "m", FILES)  # add the remaining files in place
    assert_tables_equal(read_table(tmp_path / "m"), expected_table())
    assert file_table(m) == expected_files() and len(m["parts"]) == 2
    with ShardWriter(tmp_path / "m", **SETTINGS) as w:
        assert w.done_chunks(FILES[0]["sha"]) == 3
