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
