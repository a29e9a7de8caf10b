#!/usr/bin/env python3
"""The paper's Table 1 protocol (FlowSynth, arXiv 1907.00971) on an acids-flowsynth backend.

For each fold f, every model (MLP, CNN, ResNet, VAE, VAE_flow, Flow_reg) is trained on the train split,
selected on the valid split, and scored on the held-out test presets: MSE_n of the parameters, and the
spectral convergence and MSE between the test presets' log-mel (64 x 80, log(mel + 1e-3)) and that of the
audio re-rendered from the predicted parameters. Reported as mean ± std over folds of the per-fold means
(the paper's ± is over folds too). A ``mean`` row predicts the training presets' mean vector for every
test preset: the figure a model that learnt nothing gets.

Folds: with ``--presets N`` each fold is a fresh seeded draw of N presets with its own 80/10/10 split
(repeated hold-out); with ``--presets bank`` the bank is rendered once and each fold is another seeded
80/10/10 split of it.

Out of domain (``--ood K``): K real instrument notes of ../shared/data/notes (FluidR3 violin, cello,
flute, trumpet, alto sax; a seeded draw), each pitch-tracked and shifted to C4 (``acids_flowsynth.infer``),
encoded by every model of every fold, re-rendered: SC and mel MSE against the shifted note's mel.

    python tools/bench/flowsynth_table.py --presets 2000 --folds 2 --epochs 30 -o bench-out/fs-sub
    python tools/bench/flowsynth_table.py --synth amsynth --presets bank --folds 2 -o bench-out/fs-am

``--config small`` is a reduced model and schedule for CPU runs; ``paper`` is the paper's (GPU).
CPU time (process + children, i.e. amsynth's workers) is reported at the end.

Folds can run in separate processes (``--first-fold K --folds 1``, each with its own ``-o``; a bank is
shared through ``--data``), then be assembled: ``--collect RUN_DIR ... -o OUT`` writes OUT/table.md from
their table.json files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

MODELS = ("mlp", "cnn", "resnet", "vae", "vae_flow", "flow_reg")
NOTES = Path(__file__).resolve().parents[3] / "shared" / "data" / "notes"


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


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def mean_baseline(ds) -> dict:
    """Scores of predicting the training presets' mean vector for every test preset."""
    import torch

    from acids_flowsynth import losses
    from acids_flowsynth.train import meta_of, rerender_mel

    _, v_tr = ds.part("train")
    mel, v = ds.part("test")
    pred = torch.from_numpy(v_tr.mean(0, keepdims=True)).expand(len(v), -1)
    re = rerender_mel(pred[:1], meta_of(ds))
    a = torch.log(torch.exp(torch.from_numpy(mel[..., :80])) + 1e-3)
    b = torch.log(torch.exp(torch.from_numpy(re[..., :80])) + 1e-3).expand_as(a)
    return {
        "mse_n": float(losses.mse_n(pred, torch.from_numpy(v)).mean()),
        "sc": float(losses.spectral_convergence(b, a).mean()),
        "mel_mse": float(losses.spectral_mse(b, a).mean()),
    }


def ood_notes(k: int, seed: int = 0) -> list[Path]:
    rows = list(csv.DictReader((NOTES / "notes.csv").open()))
    rows = [r for r in rows if "/16000/" in r["file"]]
    import numpy as np

    pick = np.random.default_rng(seed).choice(len(rows), size=min(k, len(rows)), replace=False)
    return [NOTES.parent / rows[i]["file"] for i in sorted(pick)]


def ood_scores(ckpt: Path, notes: list[Path], prepared: dict) -> dict:
    """SC and mel MSE of re-rendering each note's inferred parameters against its (shifted) mel."""
    import numpy as np
    import torch

    from acids_flowsynth import checkpoint, losses
    from acids_flowsynth.infer import load_note
    from acids_flowsynth.render import mel_of
    from acids_flowsynth.train import rerender_mel

    model, meta = checkpoint.load(ckpt)
    sr = int(meta["render"]["sample_rate"])
    mels = []
    for p in notes:
        if p not in prepared:
            x, info = load_note(p, meta)
            prepared[p] = (mel_of(x, sr), info)
        mels.append(prepared[p][0])
    mel = torch.from_numpy(np.stack(mels))
    pred = model.infer(mel)
    re = torch.from_numpy(rerender_mel(pred, meta))
    a = torch.log(torch.exp(mel[..., :80]) + 1e-3)
    b = torch.log(torch.exp(re[..., :80]) + 1e-3)
    return {
        "sc": float(losses.spectral_convergence(b, a).mean()),
        "mel_mse": float(losses.spectral_mse(b, a).mean()),
    }


def write_table(records: list[dict], out: Path) -> None:
    """table.md from one or more runs' table.json records (their folds pooled)."""
    import numpy as np

    info = records[0]["info"]
    by_fold: dict[str, dict[int, dict]] = {}  # a later run's (model, fold) replaces an earlier one's
    ood_by_fold: dict[str, dict[int, dict]] = {}
    timing: dict[str, float] = {}
    for r in records:
        for k, rows in r["results"].items():
            by_fold.setdefault(k, {}).update(zip(r["folds"], rows, strict=True))
        for k, rows in r["ood"].items():
            if rows:
                ood_by_fold.setdefault(k, {}).update(zip(r["folds"], rows, strict=True))
        for k, v in r["timing"].items():
            timing[k] = timing.get(k, 0.0) + v
    results = {k: list(v.values()) for k, v in by_fold.items()}
    ood = {k: list(v.values()) for k, v in ood_by_fold.items()}
    folds = sorted({f for v in by_fold.values() for f in v})

    def cell(vals: list[float]) -> str:
        a = np.asarray(vals)
        return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"

    notes = info["ood_notes"]
    head = "| model | MSE_n | SC | mel MSE |" + (" OOD SC | OOD mel MSE |" if notes else "")
    lines = [
        f"synth {info['synth']}, subset {info['subset']}, presets {info['presets']} "
        f"({'bank, a split per fold' if info['bank'] else 'per fold'}), folds {sorted(folds)}, "
        f"config {info['config']}, epochs {info['epochs']} (max), OOD notes {notes}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for kind, rows in results.items():
        line = (
            f"| {kind} | {cell([r['mse_n'] for r in rows])} | {cell([r['sc'] for r in rows])} | "
            f"{cell([r['mel_mse'] for r in rows])} |"
        )
        if notes:
            o = ood.get(kind, [])
            line += (
                f" {cell([r['sc'] for r in o])} | {cell([r['mel_mse'] for r in o])} |" if o else " - | - |"
            )
        lines.append(line)
    kinds = [k for k in results if k != "mean"]
    if "mlp" in results and "flow_reg" in results:
        sc_mlp = np.mean([r["sc"] for r in results["mlp"]])
        sc_fr = np.mean([r["sc"] for r in results["flow_reg"]])
        best = min(kinds, key=lambda k: np.mean([r["sc"] for r in results[k]]))
        lines += [
            "",
            f"Flow_reg SC / MLP SC = {sc_fr / sc_mlp:.3f} (goal of the issue: <= 0.5); best SC: {best}",
        ]
    cpu = sum(r["cpu_s"] for r in records)
    wall = max(r["wall_s"] for r in records)
    lines += [
        "",
        f"CPU {cpu:.0f} s (process + children, all runs; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
        + f"), wall {wall:.0f} s (longest run), {info['threads']} torch thread(s) per run, "
        f"{len(records)} run(s)",
    ]
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")


def collect(dirs: list[str], out: Path) -> int:
    records = [json.loads((Path(d) / "table.json").read_text()) for d in dirs]
    out.mkdir(parents=True, exist_ok=True)
    write_table(records, out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", default="acids-sub")
    ap.add_argument("--presets", default="2000", help="presets per fold, or `bank`")
    ap.add_argument("--subset", default="16")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--config", default="small", choices=("small", "paper", "tiny"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ood", type=int, default=0, help="real notes for the out-of-domain columns")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--first-fold", type=int, default=0, help="run folds K .. K + folds - 1")
    ap.add_argument(
        "--data",
        default=None,
        help="the dataset directory: the bank's (default OUT/data-bank), or with --folds 1 the fold's",
    )
    ap.add_argument("--collect", nargs="+", default=None, help="assemble the table.json of these runs")
    ap.add_argument("-o", "--out", default="bench-out/flowsynth-table")
    args = ap.parse_args()
    if args.collect:
        return collect(args.collect, Path(args.out))

    import torch

    from acids_data.store import read_manifest
    from acids_flowsynth.config import preset
    from acids_flowsynth.data import load
    from acids_flowsynth.render import render_dataset
    from acids_flowsynth.train import train

    torch.set_num_threads(args.threads)
    base = small_config() if args.config == "small" else preset(args.config)
    out = Path(args.out)
    kinds = args.models.split(",")
    results: dict[str, list[dict]] = {m: [] for m in ["mean", *kinds]}
    ood: dict[str, list[dict]] = {m: [] for m in kinds}
    notes = ood_notes(args.ood) if args.ood else []
    prepared: dict = {}
    t0, c0 = time.monotonic(), cpu_seconds()
    timing: dict[str, float] = {}
    bank = None
    if args.presets == "bank":
        where = Path(args.data) if args.data else out / "data-bank"
        if not (where / "manifest.json").is_file() or not read_manifest(where).get("complete"):
            render_dataset(args.synth, "bank", where, subset=args.subset, seed=1000)  # (or resume it)
        bank = load(where)
        timing["render"] = cpu_seconds() - c0
    for fold in range(args.first_fold, args.first_fold + args.folds):
        if bank is not None:
            data = bank.resplit(1000 + fold)
        else:
            c = cpu_seconds()
            where = Path(args.data) if args.data and args.folds == 1 else out / f"data-{fold}"
            render_dataset(args.synth, int(args.presets), where, subset=args.subset, seed=1000 + fold)
            data = load(where)
            timing["render"] = timing.get("render", 0.0) + cpu_seconds() - c
        results["mean"].append(mean_baseline(data))
        for kind in kinds:
            c = cpu_seconds()
            cfg = dataclasses.replace(
                base,
                model=dataclasses.replace(base.model, kind=kind, seed=fold),
                train=dataclasses.replace(base.train, seed=fold),
            )
            run = out / f"{kind}-{fold}"
            ckpt = train(cfg, data, run, tensorboard=False, epochs=args.epochs)
            m = json.loads((run / "metrics.json").read_text())
            row = {k: m[k]["mean"] for k in ("mse_n", "sc", "mel_mse")}
            row["epochs"] = m["epochs"]
            row["cpu_s"] = round(cpu_seconds() - c, 1)
            results[kind].append(row)
            timing[kind] = timing.get(kind, 0.0) + row["cpu_s"]
            if notes:
                c = cpu_seconds()
                ood[kind].append(ood_scores(ckpt, notes, prepared))
                timing["ood"] = timing.get("ood", 0.0) + cpu_seconds() - c
            print(
                f"fold {fold} {kind:9} {row} ood {ood[kind][-1:] or '-'} ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )

    n_presets = len(bank.split) if bank is not None else args.presets
    info = {
        "synth": args.synth,
        "subset": args.subset,
        "presets": n_presets,
        "bank": bank is not None,
        "config": args.config,
        "epochs": args.epochs or base.train.epochs,
        "ood_notes": len(notes),
        "threads": args.threads,
    }
    record = {
        "args": vars(args),
        "info": info,
        "folds": list(range(args.first_fold, args.first_fold + args.folds)),
        "results": results,
        "ood": ood,
        "cpu_s": cpu_seconds() - c0,
        "wall_s": time.monotonic() - t0,
        "timing": timing,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(record, indent=1))
    write_table([record], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
