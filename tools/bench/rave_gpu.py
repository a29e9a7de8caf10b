"""acids-rave on one CUDA GPU: training speed of a preset, and the command line's train / resume there.

    python tools/bench/rave_gpu.py --data DATASET --out DIR [--work DIR] [--preset v2] [--budget-s 180]

Not a comparison with the official implementation (nothing else runs here); what it measures:

1. speed: ``Trainer.step`` on the GPU at the preset's batch and signal length (v2: 8 x 131072), phase 1
   (VAE + spectral distance) and phase 2 (adversarial, encoder frozen), random input (speed does not
   depend on the data), each step timed between ``torch.cuda.synchronize()`` calls: median of ``--steps``
   after ``--warmup``; peak GPU memory. The same with ``torch.backends.cudnn.benchmark`` on.
2. the command line on the GPU: ``acids-rave train --device cuda`` on DATASET for about ``--budget-s``
   seconds (the step count from 1.'s phase-1 speed; the last quarter in phase 2), then ``--resume`` for
   ``--resume-steps`` more: the step reached, the records on stdout, the validation spectral distance at
   every ``--val-every`` steps (from RUN/metrics.jsonl), the checkpoint loaded again on the CPU.

Writes OUT/results.json (and prints it), OUT/metrics.jsonl, OUT/curve.png (training loss and validation
distance against steps) and OUT/validation-last.png (the run's last validation spectrogram); the run
itself (checkpoints) stays in WORK/run. ``--plot-only OUT`` redraws curve.png from a finished OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def speed(
    dev: str, preset: str, steps: int, warmup: int, phase: int, batch: int | None, n_signal: int | None
) -> dict:
    import torch

    from acids_rave.config import load_config
    from acids_rave.train import Trainer

    cfg = load_config(preset)
    t = cfg.train
    b, n = batch or t.batch, n_signal or t.n_signal
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(t, batch=b, n_signal=n, phase1_steps=10**9 if phase == 1 else 0)
    )
    cuda = dev.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, dev)
    x = 0.3 * torch.randn(b, cfg.channels, n, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        logs = trainer.step(x)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "phase": phase,
        "batch": [b, n],
        "step_s": med,
        "steps_per_s": 1 / med,
        "audio_s_per_s": b * n / cfg.sample_rate / med,
        "all_s": times,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "loss_finite": bool(torch.isfinite(torch.tensor(float(logs["loss"])))),
    }


def plot(out: Path) -> Path | None:
    """OUT/curve.png: spectral distance (training, smoothed; validation) against steps, phase 2 shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    res = json.loads((out / "results.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [m["step"] for m in metrics]
    train = [m["multiband"] + m["fullband"] for m in metrics]
    k = 50
    smooth = [
        sum(train[max(0, i - k + 1) : i + 1]) / len(train[max(0, i - k + 1) : i + 1])
        for i in range(len(train))
    ]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(
        steps,
        smooth,
        lw=1,
        color="0.6",
        label=f"training batches: multi-band + full-band (mean of {k} steps)",
    )
    v = res["validation"]
    ax.plot([s for s, _ in v], [d for _, d in v], "o-", color="C0", label="held-out validation (full band)")
    p1 = res["cli_train"]["phase1_steps"]
    ax.axvspan(p1, max(steps), color="C1", alpha=0.12, label="phase 2 (adversarial)")
    ax.set_xlabel("step")
    ax.set_ylabel("multi-scale spectral distance")
    b = res["speed"][0]["batch"]
    wall = res["cli_train"]["wall_s"]
    ax.set_title(
        f"{res['preset']} on one {res['device']}: {max(steps)} steps of {b[0]} x {b[1]} in {wall:.0f} s"
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)
    return out / "curve.png"


def cli(args: list[str], log: Path) -> tuple[int, list[dict], float]:
    t0 = time.perf_counter()
    with open(log, "a") as err:
        p = subprocess.run(
            [sys.executable, "-m", "acids_rave.cli", *args], stdout=subprocess.PIPE, stderr=err, text=True
        )
    records = [json.loads(line) for line in p.stdout.splitlines() if line.strip().startswith("{")]
    return p.returncode, records, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--out", type=Path, help="results (a few small files)")
    ap.add_argument("--plot-only", type=Path, metavar="OUT", help="redraw OUT/curve.png, run nothing")
    ap.add_argument("--work", type=Path, default=Path("/tmp/rave-gpu"), help="the run's directory's parent")
    ap.add_argument("--preset", default="v2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--n-signal", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=180.0, help="the command-line run's training time")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--resume-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda", help="cuda (the point); cpu only to try the script out")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides (CLI run)"
    )
    a = ap.parse_args()
    if a.plot_only:
        print(plot(a.plot_only))
        return 0
    if not a.data or not a.out:
        ap.error("--data and --out are required")

    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("rave_gpu.py: no CUDA device")
    a.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device,
        "torch": torch.__version__,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "preset": a.preset,
        "command": " ".join(sys.argv),
    }

    def save() -> None:
        (a.out / "results.json").write_text(json.dumps(res, indent=1))

    # 1. speed
    res["speed"] = []
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for phase in (1, 2):
            r = speed(a.device, a.preset, a.steps, a.warmup, phase, a.batch, a.n_signal)
            r["cudnn_benchmark"] = bench
            res["speed"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "all_s"}), flush=True)
            save()
    torch.backends.cudnn.benchmark = False

    # 2. the command line: train, resume, load on the CPU
    p1 = next(r for r in res["speed"] if r["phase"] == 1 and not r["cudnn_benchmark"])
    total = max(4 * a.val_every, int(a.budget_s / p1["step_s"]) // a.val_every * a.val_every)
    phase1 = total * 3 // 4 // a.val_every * a.val_every
    run = a.work / "run"
    log = a.out / "train-stderr.log"
    common = ["--data", a.data, "-o", str(run), "--device", a.device, "--workers", str(a.workers)]
    common += ["--val-every", str(a.val_every), "--save-every", str(a.val_every)]
    rc, recs, wall = cli(
        ["train", *common, "--config", a.preset, *[x for s in a.set for x in ("--set", s)],
         "--max-steps", str(total), "--phase1-steps", str(phase1), "--no-resume"],
        log,
    )  # fmt: skip
    res["cli_train"] = {"rc": rc, "records": recs, "wall_s": wall, "max_steps": total, "phase1_steps": phase1}
    save()
    rc2, recs2, wall2 = cli(["train", *common, "--max-steps", str(total + a.resume_steps), "--resume"], log)
    res["cli_resume"] = {"rc": rc2, "records": recs2, "wall_s": wall2, "max_steps": total + a.resume_steps}
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res["validation"] = [[m["step"], m["validation"]] for m in metrics if "validation" in m]
    steps = [m["step"] for m in metrics]
    res["metrics_steps"] = {"first": steps[0], "last": steps[-1], "n": len(steps), "unique": len(set(steps))}
    from acids_rave import checkpoint

    model, _ = checkpoint.load(run / "last.ckpt", map_location="cpu")
    x = torch.randn(1, model.config.channels, 4 * 2048 * 4)
    with torch.no_grad():
        y = model.decode(model.encode(x))
    res["cpu_reload"] = {"out_shape": list(y.shape), "finite": bool(torch.isfinite(y).all())}
    info = [sys.executable, "-m", "acids_rave.cli", "info", str(run / "last.ckpt")]
    res["info"] = subprocess.run(info, capture_output=True, text=True).stdout
    save()
    pngs = sorted((run / "validation").glob("*.png"))
    if pngs:
        shutil.copy(pngs[-1], a.out / "validation-last.png")
    shutil.copy(run / "metrics.jsonl", a.out / "metrics.jsonl")
    plot(a.out)
    print(json.dumps({k: v for k, v in res.items() if k != "speed"}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
