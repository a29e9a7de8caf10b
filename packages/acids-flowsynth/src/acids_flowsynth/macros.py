"""``acids-flowsynth macros``: the control space's axes as macro controls, one rendered sweep per control.

For each of the first ``controls`` axes (latent dimensions, or the PCA of the training latents with a
dataset), the coordinate goes from ``-span`` to ``+span`` standard deviations in ``steps`` steps, the
others at 0. Each step's parameters come from the regressor and are rendered with the model's synth;
per control the command writes ``macro-K.wav`` (the steps one after the other) and ``macro-K.png`` (the
parameters along the sweep over the mel of each step), and reports which parameters it moves most.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acids_core.errors import MissingDependency, UsageError


def sweep_macros(
    model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    controls: int = 4,
    steps: int = 7,
    span: float = 2.0,
    duration: float | None = None,
) -> dict[str, Any]:
    """Render the sweeps; return a record body (``axes``, ``controls``: [{index, wav, png, moves}])."""
    import soundfile as sf

    from acids_flowsynth import checkpoint
    from acids_flowsynth.control import ControlSpace
    from acids_flowsynth.render import mel_of
    from acids_flowsynth.synth import get_backend
    from acids_flowsynth.train import full_vectors

    if steps < 2 or controls < 1 or span <= 0:
        raise UsageError("need --steps >= 2, --controls >= 1 and --span > 0")
    model, meta = checkpoint.load(model_path)
    space = ControlSpace.pca(model, data) if data else ControlSpace.latent(model)
    controls = min(controls, space.dim)
    r = dict(meta.get("render", {}))
    sr = int(r.get("sample_rate", 22050))
    dur = float(duration or r.get("duration", 4.0))
    hold = min(float(r.get("hold", 3.0)), 0.75 * dur)
    backend = get_backend(meta["synth"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = torch.linspace(-span, span, steps)
    names = list(meta.get("subset", []))
    result: list[dict[str, Any]] = []
    for k in range(controls):
        coords = torch.zeros(steps, space.dim)
        coords[:, k] = values
        params = space.params(coords)  # (steps, S) normalised
        with torch.inference_mode():
            audio = backend.render(
                full_vectors(params, meta),
                note=r.get("note", 60),
                velocity=r.get("velocity", 100),
                hold=hold,
                duration=dur,
                sample_rate=sr,
            ).numpy()
        wav = out / f"macro-{k}.wav"
        sf.write(wav, np.concatenate(list(audio)), sr, subtype="FLOAT")
        moves = (params.max(0).values - params.min(0).values).numpy()
        order = np.argsort(-moves)[:5]
        png = out / f"macro-{k}.png"
        _plot(
            png,
            values.numpy(),
            params.numpy(),
            names,
            [mel_of(a, sr) for a in audio],
            f"{space.kind} axis {k}",
        )
        result.append(
            {
                "index": k,
                "wav": str(wav.resolve()),
                "png": str(png.resolve()),
                "moves": {names[i]: round(float(moves[i]), 4) for i in order},
            }
        )
    return {
        "model": str(Path(model_path).resolve()),
        "axes": space.kind,
        "span": span,
        "steps": steps,
        "controls": result,
    }


def _plot(
    path: Path, values: np.ndarray, params: np.ndarray, names: list[str], mels: list, title: str
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("plots need matplotlib: pip install acids-flowsynth[train]") from None
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(8, 6))
    for j, name in enumerate(names):
        a0.plot(values, params[:, j], label=name, lw=1)
    a0.set_xlabel("control (std)")
    a0.set_ylabel("normalised value")
    a0.set_ylim(-0.02, 1.02)
    a0.set_title(title)
    if len(names) <= 16:
        a0.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    a1.imshow(np.concatenate(mels, axis=1), origin="lower", aspect="auto", cmap="magma")
    a1.set_xlabel("frames, one block per step")
    a1.set_ylabel("mel band")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
