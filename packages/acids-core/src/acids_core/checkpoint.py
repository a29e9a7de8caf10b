"""The checkpoint envelope: one file with a format name and version around a model's payload.

```
{"format": "acids-rave", "format_version": 1, "package": "acids-rave", "package_version": "0.1.0",
 "created": "2026-11-25T12:00:00Z", "config": {...resolved config...}, "payload": {...state dicts, step...}}
```
Written atomically (temporary file, fsync, rename): a run killed mid-save keeps its previous checkpoint.
Loaded with ``torch.load(weights_only=True)``, so a checkpoint can hold tensors, numbers, strings, lists
and dicts but never executes code. A loader refuses another format, and a newer format version with a
message that says which package to upgrade. torch is imported only inside these functions.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path
from typing import Any

from acids_core.atomic import atomic_write
from acids_core.errors import DataError, MissingDependency, MissingInput

ENVELOPE_KEYS = ("format", "format_version", "package", "package_version", "created", "config", "payload")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependency("checkpoints need PyTorch: pip install torch") from None
    return torch


def make_envelope(
    *,
    format: str,
    format_version: int,
    payload: dict[str, Any],
    config: dict[str, Any] | None = None,
    package: str | None = None,
    package_version: str | None = None,
) -> dict[str, Any]:
    """Wrap ``payload`` in the envelope (no I/O)."""
    if not format or not isinstance(format_version, int) or format_version < 1:
        raise ValueError("a checkpoint needs a format name and an integer format_version >= 1")
    return {
        "format": format,
        "format_version": format_version,
        "package": package or format,
        "package_version": package_version or "unknown",
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": config or {},
        "payload": payload,
    }


def save_checkpoint(path: str | os.PathLike[str], envelope: dict[str, Any]) -> Path:
    """Write an envelope (see :func:`make_envelope`) to ``path`` atomically; return the path."""
    torch = _torch()
    missing = [k for k in ENVELOPE_KEYS if k not in envelope]
    if missing:
        raise ValueError(f"not a checkpoint envelope, missing {missing}")
    p = Path(path)
    with atomic_write(p, "wb") as f:
        torch.save(envelope, f)
    return p


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_version: int | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """Load and check an envelope.

    Args:
        path: the checkpoint file.
        format: the expected format name (None accepts any acids envelope).
        max_version: the newest ``format_version`` the caller understands.

    Raises:
        MissingInput: no such file. DataError: not a checkpoint, another format, or a newer version.
    """
    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise MissingInput(f"{p}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # a foreign pickle also makes torch warn about its protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            env = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a bad file (UnpicklingError, RuntimeError, EOF...)
        raise DataError(f"{p}: not a readable checkpoint ({_load_failure(e)})") from None
    return check_envelope(env, p, format=format, max_version=max_version)


def _load_failure(e: Exception) -> str:
    """One short reason for a failed ``torch.load`` (torch's own messages run to several paragraphs)."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        # the weights-only unpickler met something that is not tensors and plain data: another pickle, a
        # file that is not PyTorch's, or objects that would run code on load (never loaded here)
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail_line = detail[0].strip() if detail and "WeightsUnpickler" in text else ""
        why = "not a PyTorch file of tensors and plain data"
        return f"{why}: {detail_line[:120]}" if detail_line else why
    if isinstance(e, (OSError, EOFError)) or "PytorchStreamReader" in text:
        return f"truncated or corrupt file ({text.splitlines()[0][:120] if text else type(e).__name__})"
    return text.splitlines()[0][:200] if text else type(e).__name__


def check_envelope(
    env: Any, where: str | os.PathLike[str], *, format: str | None = None, max_version: int | None = None
) -> dict[str, Any]:
    """Validate an already loaded envelope (shared by :func:`load_checkpoint` and readers of other stores)."""
    if not isinstance(env, dict) or "format" not in env or "format_version" not in env:
        raise DataError(
            f"{where}: not an acids checkpoint (no format header); was it written by another tool?"
        )
    if format is not None and env["format"] != format:
        raise DataError(f"{where}: is a '{env['format']}' checkpoint, expected '{format}'")
    version = env["format_version"]
    if max_version is not None and version > max_version:
        pkg = env.get("package", env["format"])
        raise DataError(
            f"{where}: checkpoint format {env['format']} version {version} is newer than this installation"
            f" reads (up to {max_version}); upgrade {pkg} (written by {pkg} {env.get('package_version')})"
        )
    return env


def peek_format(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The (format, format_version) of a checkpoint, without checking either."""
    env = load_checkpoint(path)
    return env["format"], int(env["format_version"])
