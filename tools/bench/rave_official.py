"""Worker for rave_bench.py that runs the OFFICIAL acids-rave 2.3.1 (inside bench-out/venv-rave-full).

Usage (the benchmark calls it): python rave_official.py TASK --config v2 [--threads 1] [...]; one JSON line
on stdout. Tasks: checkpoint (an untrained run dir for `rave export`), offline, stream, train.
torchaudio is replaced by a small shim installed by rave_bench.py (see TORCHAUDIO_SHIM there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _build(config: str, streaming: bool):  # type: ignore[no-untyped-def]
    import cached_conv as cc
    import gin
    import rave

    cc.use_cached_conv(streaming)
    gin.clear_config()
    gin.add_config_file_search_path(str(Path(rave.__file__).parent / "configs"))
    gin.parse_config_file(f"{config}.gin")
    model = rave.RAVE(n_channels=1)
    return model


def _audio(path: str):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    return torch.from_numpy(np.load(path)).float()[None, None]


def task_checkpoint(a: argparse.Namespace) -> dict:
    """An untrained run: config.gin + a checkpoint whose fidelity keeps 16 latent dims."""
    import gin
    import torch

    model = _build(a.config, streaming=False)
    n = model.fidelity.shape[0]
    fid = torch.clamp(torch.arange(1, n + 1).float() / 16 * 0.95, max=1.0)
    model.fidelity.copy_(fid)
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.gin").write_text(gin.operative_config_str())
    torch.save({"state_dict": model.state_dict()}, run / "bench.ckpt")
    return {"run": str(run), "params": sum(p.numel() for p in model.parameters())}


def task_offline(a: argparse.Namespace) -> dict:
    import torch

    model = _build(a.config, streaming=False).eval()
    x = _audio(a.audio)
    times = []
    with torch.no_grad():
        for _ in range(a.reps + 1):
            t0 = time.perf_counter()
            z = model.encoder.reparametrize(model.encode(x))[0]
            y = model.decode(z)
            times.append(time.perf_counter() - t0)
    return {"seconds": min(times[1:]), "all": times, "out_shape": list(y.shape)}


def task_stream(a: argparse.Namespace) -> dict:
    import torch

    ts = torch.jit.load(a.model).eval()
    x = _audio(a.audio)
    n = x.shape[-1] // a.block
    with torch.no_grad():
        for i in range(4):  # warm-up (also the TorchScript profiling runs)
            ts(x[..., i * a.block : (i + 1) * a.block])
        best = None
        for _ in range(a.reps):
            t0 = time.perf_counter()
            for i in range(n):
                ts(x[..., i * a.block : (i + 1) * a.block])
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
    return {"seconds": best, "blocks": n, "block": a.block}


def task_train(a: argparse.Namespace) -> dict:
    import pytorch_lightning as pl
    import torch

    model = _build(a.config, streaming=False)
    # on_fit_start only writes the gin config to TensorBoard (self.logger.experiment): no logger here
    model.on_fit_start = lambda: None
    if a.phase == 2:
        model.warmed_up = True
    g = torch.Generator().manual_seed(0)
    data = [0.3 * torch.randn(1, a.n_signal, generator=g) for _ in range(a.batch)]
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=False)
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):  # type: ignore[no-untyped-def]
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, out, batch, idx):  # type: ignore[no-untyped-def]
            times.append(time.perf_counter() - self.t0)

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=a.steps + a.warmup_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Clock()],
    )
    trainer.fit(model, loader)
    return {"step_s": times[a.warmup_steps :], "warmup_s": times[: a.warmup_steps]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["checkpoint", "offline", "stream", "train"])
    ap.add_argument("--config", default="v2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--audio")
    ap.add_argument("--model")
    ap.add_argument("--run")
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n-signal", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--phase", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    res = globals()[f"task_{a.task}"](a)
    res.update(task=a.task, config=a.config, threads=a.threads, impl="official")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
