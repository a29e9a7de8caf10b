"""Automatic transfer adjustments: octave shift, loudness quantile matching, unvoiced attenuation."""

import numpy as np

from acids_ddsp.transfer import adjust, feature_stats


def test_octave_shift_and_loudness_matching():
    rng = np.random.default_rng(0)
    train = {
        "f0": 440.0 * 2 ** rng.uniform(-0.5, 0.5, 2000),
        "f0_confidence": np.ones(2000),
        "loudness": rng.uniform(-40, -10, 2000),
    }
    stats = feature_stats([train])
    assert abs(stats["pitch_midi_mean"] - 69) < 0.5
    f0 = 110.0 * 2 ** rng.uniform(-0.4, 0.4, 500)  # two octaves below
    conf = np.where(np.arange(500) < 450, 0.9, 0.1)
    loud = rng.uniform(-70, -50, 500)
    f0_out, loud_out, done = adjust(f0, conf, loud, stats, pitch_shift=1.0, loudness_shift=-3.0)
    assert done["octaves"] == 2.0
    np.testing.assert_allclose(f0_out, f0 * 4 * 2 ** (1 / 12), rtol=1e-5)
    voiced = loud_out[:450] + 3.0
    assert -41 < voiced.min() and voiced.max() < -9  # mapped into the training range
    np.testing.assert_allclose(loud_out[450:], loud[450:] - 20 - 3, rtol=1e-5)


def test_no_stats_means_manual_shifts_only():
    f0, loud, done = adjust(np.full(4, 200.0), np.ones(4), np.full(4, -30.0), None, pitch_shift=12.0)
    np.testing.assert_allclose(f0, 400.0, rtol=1e-6)
    np.testing.assert_allclose(loud, -30.0)
    assert done["octaves"] == 0.0
