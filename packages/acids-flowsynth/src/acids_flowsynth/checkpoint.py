"""acids-flowsynth checkpoints: the acids-core envelope, format ``acids-flowsynth`` version 2.

Version 2: the auto-encoders' decoder is made of transposed convolutions (version 1: upsampling then
convolution), and their loss scale changed; version-1 auto-encoders are refused with a one-line error
(retrain them), version-1 baselines (``mlp``, ``cnn``) still load.

Payload: ``model`` (state dict, with the input mean/std buffers), ``meta`` (what the model predicts: synth
name, all parameter names, the subset's names and indices, the base vector the other parameters keep, and
the render settings), and for training runs ``optimizer``, ``scheduler``, ``epoch``, ``best``, ``bad_epochs``,
``rng`` and ``history`` (what a resume needs). The resolved config is in the envelope's ``config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint
from acids_core.config import from_dict, to_dict
from acids_core.errors import DataError
from acids_flowsynth import __version__
from acids_flowsynth.config import AE_KINDS, FlowSynthConfig
from acids_flowsynth.model import FlowSynth

FORMAT = "acids-flowsynth"
FORMAT_VERSION = 2


def save(model: FlowSynth, path: str | os.PathLike[str], meta: dict[str, Any], **extra: Any) -> Path:
    """Write ``model`` with its ``meta`` (and training state in ``extra``) atomically."""
    payload = {"model": model.state_dict(), "meta": meta, **extra}
    envelope = make_envelope(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        payload=payload,
        config=to_dict(model.cfg),
        package="acids-flowsynth",
        package_version=__version__,
    )
    return save_checkpoint(path, envelope)


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked envelope (DataError for another format, a newer version or a version-1 auto-encoder;
    MissingInput if absent)."""
    env = load_checkpoint(path, format=FORMAT, max_version=FORMAT_VERSION)
    kind = (env.get("config") or {}).get("model", {}).get("kind")
    if env.get("format_version", 1) < 2 and kind in AE_KINDS:
        raise DataError(
            f"{path}: a {kind} model of acids-flowsynth 0.1 (version-1 checkpoint, an older decoder); "
            "retrain it with this version"
        )
    return env


def config_of(envelope: dict[str, Any]) -> FlowSynthConfig:
    return from_dict(FlowSynthConfig, envelope["config"])


def load(path: str | os.PathLike[str]) -> tuple[FlowSynth, dict[str, Any]]:
    """Rebuild the model of a checkpoint (eval mode) and its ``meta``."""
    env = read(path)
    model = FlowSynth(config_of(env))
    model.load_state_dict(env["payload"]["model"])
    return model.eval(), dict(env["payload"]["meta"])
