"""acids-ddsp checkpoints: the acids-core envelope, format ``acids-ddsp`` version 1.

Payload: ``model`` (state dict), and for training runs ``optimizer``, ``scheduler``, ``step`` and
``rng`` (anything a resume needs). The resolved config is in the envelope's ``config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint
from acids_core.config import from_dict, to_dict
from acids_ddsp import __version__
from acids_ddsp.config import DDSPConfig
from acids_ddsp.model import DDSP

FORMAT = "acids-ddsp"
FORMAT_VERSION = 1


def save(model: DDSP, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Write ``model`` (and training state in ``extra``: optimizer, step, ...) atomically."""
    payload = {"model": model.state_dict(), **extra}
    envelope = make_envelope(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        payload=payload,
        config=to_dict(model.cfg),
        package="acids-ddsp",
        package_version=__version__,
    )
    return save_checkpoint(path, envelope)


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked envelope (DataError for another format or a newer version, MissingInput if absent)."""
    return load_checkpoint(path, format=FORMAT, max_version=FORMAT_VERSION)


def config_of(envelope: dict[str, Any]) -> DDSPConfig:
    return from_dict(DDSPConfig, envelope["config"])


def load(path: str | os.PathLike[str]) -> DDSP:
    """Rebuild the model of a checkpoint, in eval mode."""
    env = read(path)
    model = DDSP(config_of(env))
    model.load_state_dict(env["payload"]["model"])
    return model.eval()
