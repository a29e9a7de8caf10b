"""render → dataset round trip: arrays, split, manifest, resume."""

import numpy as np
import pytest
import torch
from conftest import SMALL_SUBSET

from acids_flowsynth import data
from acids_flowsynth.render import mel_of, sample_presets, split_counts, split_of
from acids_flowsynth.synth import subset_indices


def test_presets_and_split_are_seeded(synth):
    a = sample_presets(synth, 10, "16", seed=1)
    assert np.array_equal(a, sample_presets(synth, 10, "16", seed=1))
    assert not np.array_equal(a, sample_presets(synth, 10, "16", seed=2))
    idx = subset_indices(synth, "16")
    others = [i for i in range(len(synth.params)) if i not in idx]
    assert np.allclose(a[:, others], a[0, others])  # the others keep their defaults
    labels = split_of(1000, seed=0)
    assert np.bincount(labels).tolist() == [800, 100, 100]
    assert np.array_equal(labels, split_of(1000, seed=0))
    discrete = sample_presets(synth, 50, "all", seed=0)[
        :, [p.name for p in synth.params].index("filter_slope")
    ]
    assert set(np.unique(discrete)) <= {0.0, 1.0}


def test_round_trip(small_dataset, synth):
    from acids_data.reader import ShardReader
    from acids_data.store import read_manifest, verify

    m = read_manifest(small_dataset)
    assert m["complete"] and m["totals"]["chunks"] == 80
    assert split_counts(m) == {"train": 64, "valid": 8, "test": 8}
    assert verify(small_dataset) == []
    d = data.load(small_dataset)
    assert d.mel.shape == (80, 64, 62) and d.params.shape == (80, len(synth.params))
    assert d.subset_names == sorted(SMALL_SUBSET.split(","), key=[p.name for p in synth.params].index)
    expected = sample_presets(synth, 80, SMALL_SUBSET, seed=3)
    # chunk i is preset i (rendered in order)
    assert np.array_equal(d.params, expected)
    # audio and mel are the synth's render
    with ShardReader(small_dataset, keys=["audio"]) as r:
        stored = r.read(5)["audio"][0]
    with torch.inference_mode():
        audio = synth.render(torch.from_numpy(expected[5:6]), sample_rate=16000)[0].numpy()
    assert np.abs(stored - audio).max() < 2.0 / 32768
    ref = mel_of(audio, 16000)
    assert np.abs(d.mel[5] - ref).max() < 0.05  # float16 storage of ln values
    assert set(np.unique(d.split)) == {0, 1, 2}


def test_rerender_resumes(small_dataset):
    from acids_flowsynth.render import render_dataset

    before = sorted(p.name for p in (small_dataset / "shards").iterdir())
    m = render_dataset("acids-sub", 80, small_dataset, subset=SMALL_SUBSET, seed=3, sample_rate=16000)
    assert m["totals"]["chunks"] == 80
    assert sorted(p.name for p in (small_dataset / "shards").iterdir()) == before


def test_other_settings_are_refused(small_dataset):
    from acids_core.errors import UsageError
    from acids_flowsynth.render import render_dataset

    with pytest.raises(UsageError):
        render_dataset("acids-sub", 80, small_dataset, subset="16", seed=3, sample_rate=16000)


def test_params_are_a_chunk_array(small_dataset, synth):
    """One (P,) row per preset, no frame axis (acids-data chunk_keys)."""
    from acids_data.reader import ShardReader
    from acids_data.store import read_manifest

    m = read_manifest(small_dataset)
    assert m["chunk_keys"] == ["params"] and m["feature_keys"] == ["mel"]
    with ShardReader(small_dataset, keys=["params"]) as r:
        row = r.read(7)["params"]
    assert row.shape == (len(synth.params),)
    assert np.array_equal(row, sample_presets(synth, 80, SMALL_SUBSET, seed=3)[7])


def test_datasets_with_framed_params_still_load(tmp_path, synth):
    """acids-flowsynth 0.1 wrote params as a feature (n, P, F): the vector repeated over the frames."""
    from acids_data.store import ShardWriter

    vectors = sample_presets(synth, 6, SMALL_SUBSET, seed=4)
    idx = subset_indices(synth, SMALL_SUBSET)
    desc = {"names": [p.name for p in synth.params], "subset_indices": idx}
    with ShardWriter(
        tmp_path / "old",
        sample_rate=16000,
        channels=1,
        chunk=4096,
        hop=4096,
        feature_hop=1024,
        feature_keys=("mel", "params"),
        features_desc={"mel": {}, "params": desc},
        config={"synth": "acids-sub", "sample_rate": 16000},
    ) as w:
        for i, v in enumerate(vectors):
            sha = f"{i:064x}"
            feats = {"mel": np.zeros((1, 64, 4), np.float32), "params": np.repeat(v[None, :, None], 4, -1)}
            w.add_chunks(sha, f"p{i}", np.zeros((1, 1, 4096), np.int16), feats, 0, [0])
            split = ("train", "valid", "test")[int(split_of(6, 0)[i])]
            w.finish_file({"path": f"p{i}", "sha256": sha, "chunks": 1, "split": split})
    d = data.load(tmp_path / "old")
    assert np.array_equal(d.params, vectors) and d.subset == idx


def test_resplit_draws_another_fold_of_the_same_presets(small_dataset):
    d = data.load(small_dataset)
    other = d.resplit(7)
    assert other.mel is d.mel and other.params is d.params
    assert np.bincount(other.split).tolist() == [64, 8, 8] and not np.array_equal(other.split, d.split)
    assert np.array_equal(other.split, split_of(80, 7)) and data.load(other) is other
