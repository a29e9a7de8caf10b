#!/usr/bin/env python3
"""The paper's Table 1 protocol (FlowSynth, arXiv 1907.00971) on an acids-flowsynth backend.

For each fold f (a fresh seeded draw of presets with its own fixed 80/10/10 split: repeated hold-out),
every model (MLP, CNN, VAE, VAE_flow, Flow_reg) is trained on the train split, selected on the valid
split, and scored on the held-out test presets: MSE_n of the parameters, and the spectral convergence and
MSE between the test presets' log-mel (64 x 80, log(mel + 1e-3)) and that of the audio re-rendered from
the predicted parameters. Reported as mean ± std over folds of the per-fold means (the paper's ± is
over folds too).

    python tools/bench/flowsynth_table.py --presets 800 --folds 3 --epochs 60 --config small -o bench-out/fs
    python tools/bench/flowsynth_table.py --synth amsynth --presets bank --folds 3   # a split per fold

``--config small`` is a reduced model and schedule for CPU smoke runs; ``paper`` is the paper's (GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

MODELS = ("mlp", "cnn", "vae", "vae_flow", "flow_reg")


def small_config():
    from acids_flowsynth.config import FlowSynthConfig, ModelConfig, TrainConfig

    return FlowSynthConfig(
        model=ModelConfig(
            mlp_hidden=256,
            mlp_layers=3,
            dropout=0.1,
            cnn_channels=16,
            cnn_layers=4,
            kernel=5,
            cnn_hidden=256,
            cnn_mlp_layers=2,
            ae_channels=16,
            ae_hidden=256,
            reg_hidden=256,
            reg_layers=2,
            flow_length=8,
            flow_hidden=64,
        ),
        train=TrainConfig(
            batch_size=64,
            lr=1e-3,
            epochs=60,
            warm_latent=5,
            start_regress=5,
            warm_regress=5,
            plateau_patience=8,
            early_stop=15,
        ),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", default="acids-sub")
    ap.add_argument("--presets", default="800", help="presets per fold, or `bank`")
    ap.add_argument("--subset", default="16")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--config", default="small", choices=("small", "paper", "tiny"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--out", default="bench-out/flowsynth-table")
    args = ap.parse_args()

    import numpy as np
    import torch

    from acids_flowsynth.config import preset
    from acids_flowsynth.render import render_dataset
    from acids_flowsynth.train import train

    torch.set_num_threads(args.threads)
    base = small_config() if args.config == "small" else preset(args.config)
    out = Path(args.out)
    results: dict[str, list[dict]] = {m: [] for m in args.models.split(",")}
    t0 = time.monotonic()
    for fold in range(args.folds):
        data = out / f"data-{fold}"
        presets = args.presets if args.presets == "bank" else int(args.presets)
        render_dataset(args.synth, presets, data, subset=args.subset, seed=1000 + fold)
        for kind in results:
            cfg = dataclasses.replace(
                base,
                model=dataclasses.replace(base.model, kind=kind, seed=fold),
                train=dataclasses.replace(base.train, seed=fold),
            )
            run = out / f"{kind}-{fold}"
            train(cfg, data, run, tensorboard=False, epochs=args.epochs)
            m = json.loads((run / "metrics.json").read_text())
            results[kind].append(
                {
                    "mse_n": m["mse_n"]["mean"],
                    "sc": m["sc"]["mean"],
                    "mel_mse": m["mel_mse"]["mean"],
                    "epochs": m["epochs"],
                }
            )
            print(f"fold {fold} {kind:9} {results[kind][-1]}  ({time.monotonic() - t0:.0f} s)", flush=True)

    def cell(vals: list[float]) -> str:
        a = np.asarray(vals)
        return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"

    lines = [
        f"synth {args.synth}, subset {args.subset}, presets/fold {args.presets}, folds {args.folds}, "
        f"config {args.config}, epochs {args.epochs or base.train.epochs} (max)",
        "",
        "| model | MSE_n | SC | mel MSE |",
        "|---|---|---|---|",
    ]
    for kind, rows in results.items():
        lines.append(
            f"| {kind} | {cell([r['mse_n'] for r in rows])} | {cell([r['sc'] for r in rows])} | "
            f"{cell([r['mel_mse'] for r in rows])} |"
        )
    if "mlp" in results and "flow_reg" in results:
        sc_mlp = np.mean([r["sc"] for r in results["mlp"]])
        sc_fr = np.mean([r["sc"] for r in results["flow_reg"]])
        lines += ["", f"Flow_reg SC / MLP SC = {sc_fr / sc_mlp:.3f} (goal of the issue: <= 0.5)"]
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "table.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
