"""RAVE checkpoints in the acids-core envelope (format ``acids-rave``, version 1).

The resolved config is stored inside, so a checkpoint alone rebuilds its model (no config file beside
it). Payload: ``model`` (state dict, weight normalisation unfused), ``step``, ``phase``, and for resumable
training runs ``discriminator``, ``optimizers`` and ``train_state``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from acids_core import config as core_config
from acids_core.checkpoint import load_checkpoint, make_envelope, save_checkpoint
from acids_rave import __version__
from acids_rave.blocks import Conv1d
from acids_rave.config import RaveConfig

FORMAT = "acids-rave"
FORMAT_VERSION = 1


def save(path: str | os.PathLike[str], model: Any, *, step: int = 0, phase: int = 1, **extra: Any) -> Path:
    """Write ``model`` (a :class:`acids_rave.model.Rave`) and ``extra`` payload entries atomically."""
    if any(isinstance(m, Conv1d) and not m.weight_norm for m in model.modules()):
        raise ValueError("this model was fused for inference (weight norm folded); save the training model")
    payload = {"model": model.state_dict(), "step": int(step), "phase": int(phase), **extra}
    env = make_envelope(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        payload=payload,
        config=core_config.to_dict(model.config),
        package="acids-rave",
        package_version=__version__,
    )
    return save_checkpoint(path, env)


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint: (model in eval mode, envelope). Raises acids-core's DataError/MissingInput."""
    from acids_rave.model import Rave

    env = load_checkpoint(path, format=FORMAT, max_version=FORMAT_VERSION, map_location=map_location)
    data = dict(env["config"])
    # checkpoints written before ``init`` existed were initialised the default way: say so in their config
    data.setdefault("init", {"trunk_gain": 0.0, "zero_bias": False})
    cfg = core_config.from_dict(RaveConfig, data)
    model = Rave(cfg)
    model.load_state_dict(env["payload"]["model"])
    return model.eval(), env


def load_model(path: str | os.PathLike[str]) -> Any:
    """Just the model (eval mode) of a checkpoint."""
    return load(path)[0]


# --- latent priors (``acids-rave train-prior``) ----------------------------------------------------

PRIOR_FORMAT = "acids-rave-prior"
PRIOR_FORMAT_VERSION = 1


def save_prior(
    path: str | os.PathLike[str], prior: Any, *, step: int, model: dict[str, Any], **extra: Any
) -> Path:
    """Write a :class:`acids_rave.prior.LatentPrior` atomically, with ``model``: the RAVE checkpoint it
    belongs to (``path``, ``sha256`` of its weights, ``step``, ``latent_dims``, ...)."""
    payload = {"prior": prior.state_dict(), "dims": prior.dims, "step": int(step), "model": model, **extra}
    env = make_envelope(
        format=PRIOR_FORMAT,
        format_version=PRIOR_FORMAT_VERSION,
        payload=payload,
        config=core_config.to_dict(prior.cfg),
        package="acids-rave",
        package_version=__version__,
    )
    return save_checkpoint(path, env)


def load_prior(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Read a prior checkpoint: (prior in eval mode, envelope). Raises DataError/MissingInput."""
    from acids_core.errors import DataError
    from acids_rave.config import PriorConfig
    from acids_rave.prior import LatentPrior

    env = load_checkpoint(
        path, format=PRIOR_FORMAT, max_version=PRIOR_FORMAT_VERSION, map_location=map_location
    )
    p = env["payload"]
    try:
        prior = LatentPrior(core_config.from_dict(PriorConfig, env["config"]), int(p["dims"]))
        prior.load_state_dict(p["prior"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: a damaged prior checkpoint ({str(e).splitlines()[0][:160]})") from None
    return prior.eval(), env


def load_prior_and_model(
    prior_path: str | os.PathLike[str], model_path: str | os.PathLike[str] | None = None, *, hint: str = ""
) -> tuple[Any, dict[str, Any], Any, str]:
    """A prior checkpoint and the RAVE model it was trained for: (prior, its envelope, model (eval, weight
    norm unfused), the model's path).

    The model is ``model_path`` or else the path the prior recorded; it must have the weights the prior
    was trained for (the fingerprint of its state dict) and as many kept latent dims. ``hint`` ends the
    message of a missing model (what the caller offers instead). Raises MissingInput / DataError.
    """
    from acids_core.errors import DataError, MissingInput
    from acids_rave.prior import model_fingerprint

    prior, env = load_prior(prior_path)
    info = env["payload"].get("model") or {}
    path = model_path or info.get("path")
    if not path or not os.path.isfile(path):
        raise MissingInput(
            f"{path}: no such file; prior {prior_path} was trained for the RAVE checkpoint at that path "
            f"(its checkpoint records it): put the model back there{hint}"
        )
    model, model_env = load(path)
    fingerprint = model_fingerprint(model)
    if fingerprint != info.get("sha256") or model.n_latent != prior.dims:
        what = "is no longer the model" if model_path is None else "is not the model"
        raise DataError(
            f"{path} (step {model_env['payload'].get('step')}, weights {fingerprint[:12]}) {what} "
            f"{prior_path} was trained for ({info.get('path')}, step {info.get('step')}, weights "
            f"{str(info.get('sha256'))[:12]})"
        )
    return prior, env, model, str(path)
