"""Shared fixtures: one thread, the synth, and a small rendered dataset (3 parameters, 16 kHz)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# one thread: the test machines are shared 2-core boxes
torch.set_num_threads(1)

SMALL_SUBSET = "filter_cutoff,env1_attack,osc_mix"


@pytest.fixture(scope="session")
def synth():
    from acids_flowsynth.synth import get_backend

    return get_backend("acids-sub")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """80 presets of 3 parameters at 16 kHz, 4 s (about 3 s of CPU to render)."""
    from acids_flowsynth.render import render_dataset

    root = tmp_path_factory.mktemp("fs") / "data"
    render_dataset("acids-sub", 80, root, subset=SMALL_SUBSET, seed=3, sample_rate=16000)
    return root


@pytest.fixture(scope="session")
def tiny_flow_reg(small_dataset, tmp_path_factory):
    """A flow_reg model of the `tiny` preset trained 2 epochs on the small dataset (its best.ckpt)."""
    import dataclasses

    from acids_flowsynth.config import preset, with_params
    from acids_flowsynth.train import train

    cfg = with_params(preset("tiny"), 3)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="flow_reg"))
    out = tmp_path_factory.mktemp("fr") / "run"
    return train(cfg, small_dataset, out, tensorboard=False, epochs=2, evaluate_audio=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpus of real instrument notes with ground-truth pitch (shared/data/README.md): at
    $ACIDS_SHARED_DATA, else ``<repo root>/../shared/data``. Skipped when absent, failed in CI (env CI set)
    unless ACIDS_TEST_ALLOW_SKIP_SHARED_DATA is set."""
    env = os.environ.get("ACIDS_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    if not (root / "notes" / "notes.csv").is_file():
        reason = f"shared test data not found at {root} (set ACIDS_SHARED_DATA)"
        if os.environ.get("CI") and not os.environ.get("ACIDS_TEST_ALLOW_SKIP_SHARED_DATA"):
            pytest.fail(reason)
        pytest.skip(reason)
    return root
