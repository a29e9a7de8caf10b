"""ChunkDataset: gain really applied (and loudness shifted), aligned crops, workers, DDP sampler, split."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from _store_fixtures import FH, FILES, KEYS, L, make_files, write_dataset

torch = pytest.importorskip("torch")

from acids_data.dataset import ChunkDataset, split_files  # noqa: E402
from acids_data.reader import ShardReader  # noqa: E402


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """fsync guards against power loss, which no test simulates; the SIGKILLed children keep it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset") / "ds"
    write_dataset(root)
    return root


def test_items_without_augmentation_are_the_chunks(ds):
    d = ChunkDataset(ds, gain_db=None)
    r = ShardReader(ds)
    assert len(d) == len(r) == 45
    item = d[7]
    assert set(item) == {"audio", *KEYS}
    assert item["audio"].shape == (2, L) and item["audio"].dtype == torch.float32
    assert item["mel"].shape == (4, L // FH)
    for k, v in r[7].items():
        np.testing.assert_array_equal(item[k].numpy(), v)


def test_fixed_gain_scales_audio_and_shifts_loudness(ds):
    base = ShardReader(ds)[11]
    item = ChunkDataset(ds, gain_db=(-6.0, -6.0))[11]
    np.testing.assert_allclose(item["audio"].numpy(), base["audio"] * 10 ** (-6 / 20), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(item["loudness"].numpy(), base["loudness"] - 6.0, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(item["f0"].numpy(), base["f0"])  # other features untouched


def test_random_gain_really_changes_the_audio_consistently(ds):
    r = ShardReader(ds)
    d = ChunkDataset(ds, gain_db=(-12.0, -1.0))
    gains = []
    for i in range(0, 45, 4):
        base, item = r[i], d[i]
        assert not np.array_equal(item["audio"].numpy(), base["audio"])
        ratio = item["audio"].numpy()[base["audio"] != 0] / base["audio"][base["audio"] != 0]
        g = 20 * np.log10(np.median(ratio))
        np.testing.assert_allclose(ratio, np.median(ratio), rtol=1e-5)  # one gain for the whole item
        assert -12.0 - 1e-4 <= g <= -1.0 + 1e-4
        np.testing.assert_allclose(item["loudness"].numpy() - base["loudness"], g, atol=1e-3)
        gains.append(g)
    assert np.ptp(gains) > 1.0  # gains vary between items


def test_random_crops_are_frame_aligned(ds):
    r = ShardReader(ds)
    d = ChunkDataset(ds, crop=96, gain_db=None, seed=3)
    d.set_epoch(0)
    offsets = set()
    for i in range(45):
        item = d[i]
        assert item["audio"].shape == (2, 96) and item["loudness"].shape == (96 // FH,)
        full = r[i]
        starts = [
            s for s in range(0, L - 96 + 1) if np.array_equal(full["audio"][:, s : s + 96], item["audio"])
        ]
        assert len(starts) == 1 and starts[0] % FH == 0
        s = starts[0]
        for k in KEYS:
            np.testing.assert_array_equal(item[k].numpy(), full[k][..., s // FH : (s + 96) // FH])
        offsets.add(s)
    assert len(offsets) > 2
    with pytest.raises(ValueError, match="multiple of the feature hop"):
        ChunkDataset(ds, crop=100)


def test_epoch_seeding_is_deterministic(ds):
    a = ChunkDataset(ds, crop=64, seed=1)
    b = ChunkDataset(ds, crop=64, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    assert all(torch.equal(a[i]["audio"], b[i]["audio"]) for i in range(10))
    b.set_epoch(3)
    assert not all(torch.equal(a[i]["audio"], b[i]["audio"]) for i in range(10))
    # default mode (torch's RNG): repeatable under manual_seed, different on each draw
    c = ChunkDataset(ds, crop=64)
    torch.manual_seed(0)
    x = [c[i]["audio"] for i in range(10)]
    torch.manual_seed(0)
    assert all(torch.equal(u, c[i]["audio"]) for i, u in enumerate(x))
    assert not all(torch.equal(u, c[i]["audio"]) for i, u in enumerate(x))


def test_transforms_run_after_gain(ds):
    seen = []

    def t(item):
        seen.append(item["audio"].abs().max().item())
        return {**item, "flipped": -item["audio"]}

    item = ChunkDataset(ds, gain_db=(-6.0, -6.0), transforms=[t])[0]
    assert torch.equal(item["flipped"], -item["audio"]) and seen


def test_dataloader_with_two_workers(ds):
    d = ChunkDataset(ds, gain_db=None)
    assert pickle.loads(pickle.dumps(d))[5]["audio"].shape == (2, L)
    loader = torch.utils.data.DataLoader(d, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    audio = torch.cat([b["audio"] for b in batches])
    assert audio.shape == (45, 2, L) and torch.cat([b["mel"] for b in batches]).shape == (45, 4, L // FH)
    r = ShardReader(ds)
    want = sorted(r[i]["audio"].tobytes() for i in range(45))
    assert sorted(a.numpy().tobytes() for a in audio) == want


def test_distributed_sampler_ranks_are_disjoint_and_cover(ds):
    d = ChunkDataset(ds, gain_db=None, split="train", valid_fraction=0.2)
    n = len(d) - len(d) % 2  # DistributedSampler pads an odd length by repeating items
    d.indices = d.indices[:n]
    seen = []
    for rank in (0, 1):
        s = torch.utils.data.DistributedSampler(d, num_replicas=2, rank=rank, shuffle=True, seed=5)
        s.set_epoch(1)
        seen.append(list(s))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(n))


def test_split_by_file_is_disjoint_deterministic_and_covering(ds):
    r = ShardReader(ds)
    shas, ids = r.file_index()
    train = ChunkDataset(ds, split="train", valid_fraction=0.3)
    valid = ChunkDataset(ds, split="valid", valid_fraction=0.3)
    assert len(train) and len(valid)
    t_files = {shas[ids[j]] for j in train.indices}
    v_files = {shas[ids[j]] for j in valid.indices}
    assert not t_files & v_files and t_files | v_files == set(shas)
    assert sorted([*train.indices, *valid.indices]) == list(range(len(r)))
    again = ChunkDataset(ds, split="valid", valid_fraction=0.3, seed=99)  # the seed does not move files
    assert np.array_equal(again.indices, valid.indices)
    # a file is valid below a fixed threshold: a larger fraction only adds files
    bigger = {shas[ids[j]] for j in ChunkDataset(ds, split="valid", valid_fraction=0.6).indices}
    assert v_files <= bigger


def test_split_never_leaves_train_empty():
    for n in (2, 3, 10):
        shas = [f"{i:064x}" for i in range(n)]
        for frac in (0.0, 0.01, 0.5, 0.99):
            v = split_files(shas, frac)
            assert not v.all()
            assert v.any() == (frac > 0)
    assert split_files(["a" * 64], 0.5).tolist() == [False]  # one file: all train


def test_single_file_dataset_has_an_empty_valid_split(tmp_path, caplog):
    write_dataset(tmp_path / "one", make_files([5]))
    assert len(ChunkDataset(tmp_path / "one", split="train")) == 5
    assert len(ChunkDataset(tmp_path / "one", split="valid")) == 0
    assert "single source file" in caplog.text


def test_bad_arguments(ds):
    for kw in ({"split": "test"}, {"valid_fraction": 1.0}, {"gain_db": (0.0, -3.0)}, {"crop": 0}):
        with pytest.raises(ValueError):
            ChunkDataset(ds, **kw)
    assert len(FILES) == 14
