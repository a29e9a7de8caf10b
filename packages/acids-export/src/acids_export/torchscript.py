"""TorchScript files for the nn~ external, with the checks for the cases that crash it (nntilde.md §1.6-1.7).

Refused before anything is written:
- a ratio above 4096 or not a power of two (P2: Pd's 4096-sample buffers overflow; every ratio must divide
  the buffer size, a power of two);
- a method name that is not an identifier, an attribute whose values are not bool/int/float/str.
Refused after scripting, from the saved archive's code:
- operators that the libtorch builds nn~ ships with reject (``aten::stft`` with torch >= 2.7's
  ``align_to_window`` argument, ``interpolate``'s ``_upsample_lanczos2d_aa``): loading aborts Pd (P1).
  Measured: libtorch 2.5.1 (nn~ v1.6.0) loads and runs everything else these tests export (the tiny model,
  RAVE and DDSP streaming) with the outputs of torch 2.13, and refuses exactly these two
  (``tests/test_old_libtorch.py``, slow).
Refused by the check that runs on every export (:mod:`acids_export.verify`): a method whose output is not a
float32 ``(B, out_ch, n / out_ratio)`` (nn~ drops or reshapes it silently), NaN/Inf, a file that does not
reload. Warned: no ``forward`` (Pd's default method), a largest ratio of 1 (P3 with ``bufsize 0``).

torch >= 2.11 marks TorchScript as deprecated; it is still what nn~ and libtorch hosts load, so the
deprecation warnings are silenced here on purpose (:func:`quiet_jit`). :mod:`acids_export.torch_export` keeps
the ``torch.export`` route for when hosts move on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from acids_core.errors import DataError
from acids_export.nntilde import wrap
from acids_export.registry import ExportSpec, Loaded

log = logging.getLogger(__name__)

MAX_RATIO = 4096
META_NAME = "acids_export.json"
#: regex on the archive's code -> why nn~'s libtorch rejects it: measured with libtorch 2.5.1 (nn~ v1.6.0's
#: build; tests/test_old_libtorch.py) and 1.13 (reference/nntilde.md §1.6): neither loads such a file
HAZARDS = {
    r"\bstft\(": "aten::stft (torch >= 2.7 serialises a 9th argument, align_to_window, that libtorch <= 2.6 "
    "(nn~ v1.6.0 ships 2.5.1) rejects: loading aborts Pd); compute the STFT as a convolution with a DFT "
    "basis",
    r"_upsample_lanczos2d_aa": "F.interpolate (its scripted body references aten::_upsample_lanczos2d_aa, "
    "unknown to libtorch 2.5.1, nn~ v1.6.0's); use ConvTranspose1d or repeat_interleave",
}


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's TorchScript deprecation warnings (deliberately: nn~ needs TorchScript)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=Warning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=Warning)
        yield


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def spec_problems(spec: ExportSpec) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for a spec against the nn~ rules."""
    refuse, warn = [], []
    for m in spec.methods:
        if not m.name.isidentifier() or m.name.startswith("_"):
            refuse.append(f"method name '{m.name}' is not an identifier")
        for what, r in (("in_ratio", m.in_ratio), ("out_ratio", m.out_ratio)):
            if r > MAX_RATIO:
                refuse.append(f"{m.name}: {what} {r} > {MAX_RATIO} overflows nn~'s 4096-sample buffers (P2)")
            elif not is_power_of_two(r):
                refuse.append(f"{m.name}: {what} {r} is not a power of two, so it divides no nn~ buffer size")
        ins, outs = m.labels()
        if len(ins) != m.in_channels or len(outs) != m.out_channels:
            refuse.append(
                f"{m.name}: {len(ins)}/{len(outs)} labels for {m.in_channels}/{m.out_channels} channels"
            )
    if spec.sample_rate <= 0:
        refuse.append(f"sample rate {spec.sample_rate} is not positive")
    if "forward" not in [m.name for m in spec.methods]:
        warn.append("no 'forward' method: Pd's [nn~ model] without a method name will not run")
    if spec.higher_ratio == 1:
        warn.append(
            "largest ratio is 1: nn~ with 'bufsize 0' would run one sample per call (P3); use a buffer"
        )
    return refuse, warn


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with quiet_jit():
        try:
            return torch.jit.script(module)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"the model is not scriptable for TorchScript: {first[:300]}") from None


def archive_code(path: str | Path) -> str:
    """All the TorchScript source text inside a saved archive."""
    parts = []
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if "/code/" in name and name.endswith(".py"):
                parts.append(z.read(name).decode("utf-8", "replace"))
    return "\n".join(parts)


def hazards(path: str | Path) -> list[str]:
    code = archive_code(path)
    return [why for pattern, why in HAZARDS.items() if re.search(pattern, code)]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The acids-export metadata saved in a .ts file (empty for files from elsewhere)."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(f"extra/{META_NAME}"):
                    return json.loads(z.read(name))
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    return {}


def export(loaded: Loaded, out: str | Path, *, allow_hazards: bool = False) -> dict[str, Any]:
    """Wrap, script and save ``loaded`` to ``out``; return the metadata stored in the file.

    The file is written as saved, before any call, so its streaming state is fresh.
    """
    refuse, warn = spec_problems(loaded.spec)
    if refuse:
        raise DataError(f"refused for nn~: {'; '.join(refuse)}")
    for w in warn:
        log.warning("%s", w)
    scripted = script(wrap(loaded.module, loaded.spec))
    meta = {
        "format": "torchscript",
        "spec": loaded.spec.to_json(),
        "checkpoint": loaded.checkpoint,
        "checkpoint_meta": loaded.envelope_meta,
        "torch": torch.__version__,
        "warnings": warn,
    }
    out = Path(out)
    with quiet_jit():
        torch.jit.save(scripted, str(out), _extra_files={META_NAME: json.dumps(meta)})
    found = hazards(out)
    if found and not allow_hazards:
        out.unlink(missing_ok=True)
        raise DataError(f"refused for nn~: the file uses {'; '.join(found)}")
    return meta


def load(path: str | Path) -> torch.jit.ScriptModule:
    with quiet_jit():
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"{path}: not a loadable TorchScript file ({first[:200]})") from None
