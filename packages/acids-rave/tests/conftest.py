from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from acids_rave.config import PRESETS, RaveConfig

DATA = Path(os.environ.get("ACIDS_TEST_DATA", "/work/shared/data"))
PHRASES = DATA / "phrases" / "48000"

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)  # shared CI cores; tiny models do not gain from threads
    yield


@pytest.fixture
def tiny() -> RaveConfig:
    return PRESETS["tiny"]()


def _real_audio(seconds: float, offset: float = 5.0, name: str = "violin") -> tuple[torch.Tensor, int]:
    """(1, 1, T) float32 of the shared real recordings at 48 kHz, T a multiple of 2048."""
    sf = pytest.importorskip("soundfile")
    path = PHRASES / f"{name}_phrases.flac"
    if not path.is_file():
        if os.environ.get("ACIDS_TEST_ALLOW_SKIP_DATA"):
            pytest.skip(f"{path} not present")
        pytest.fail(f"{path} not present (set ACIDS_TEST_DATA, or ACIDS_TEST_ALLOW_SKIP_DATA=1 to skip)")
    info = sf.info(str(path))
    start = int(offset * info.samplerate)
    n = int(seconds * info.samplerate) // 2048 * 2048
    x, sr = sf.read(str(path), start=start, frames=n, dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(x[:, 0]))[None, None], sr


@pytest.fixture
def real_audio():
    """A loader of the shared real recordings: ``real_audio(seconds, offset=5.0, name="violin")``."""
    return _real_audio


@pytest.fixture
def dataset(tmp_path, real_audio):
    """A 48 kHz dataset (3 one-second files, chunks of 8192) made by acids-preprocess: its record."""
    from click.testing import CliRunner

    sf = pytest.importorskip("soundfile")
    pytest.importorskip("acids_data.dataset")
    from acids_data.cli import preprocess_cmd

    audio = tmp_path / "audio"
    audio.mkdir()
    for i, name in enumerate(["violin", "cello", "flute"]):
        x, sr = real_audio(1.0, offset=3.0 + i, name=name)
        sf.write(str(audio / f"{name}.wav"), x[0, 0].numpy(), sr)
    out = tmp_path / "data"
    r = CliRunner().invoke(
        preprocess_cmd,
        [
            str(audio),
            "-o",
            str(out),
            "--sample-rate",
            "48000",
            "--chunk",
            "8192",
            "--features",
            "none",
            "-j",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    return r.stdout.strip().splitlines()[-1]  # the dataset record
