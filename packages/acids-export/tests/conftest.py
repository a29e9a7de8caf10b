from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
REPO = HERE.parents[2]

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # shared CI cores; tiny models do not gain from threads
    yield


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A site directory holding the tiny exportable and a dist-info that registers it as ``tiny``.

    Real ``importlib.metadata`` entry points, as an installed model package would have, without pip.
    """
    site = tmp_path_factory.mktemp("site")
    shutil.copy(HERE / "tiny_exportable.py", site / "acids_export_tiny.py")
    info = site / "acids_export_tiny-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acids-export-tiny\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[acids.exportables]\ntiny = acids_export_tiny:exportable\n")
    return site


@pytest.fixture
def tiny_plugin(plugin_site, monkeypatch):
    """The tiny exportable discoverable in this process and in subprocesses (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(plugin_site))
    path = os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    import acids_export_tiny

    return acids_export_tiny


@pytest.fixture
def tiny_ckpt(tiny_plugin, tmp_path) -> Path:
    return Path(tiny_plugin.save(tmp_path / "tiny.ckpt"))


@pytest.fixture
def audio() -> str:
    """Real audio: $ACIDS_EXPORT_AUDIO or the repository's demo recordings."""
    from acids_export.verify import find_audio

    path = find_audio()
    if path is None:
        pytest.fail("no real audio: set ACIDS_EXPORT_AUDIO to a WAV/FLAC file")
    return path
