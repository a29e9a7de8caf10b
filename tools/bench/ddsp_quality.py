"""DDSP quality on held-out phrases of ../shared/data (issue 4, "Quality").

Trains a preset (``small`` by default) on the first ~80 % of one instrument's phrase recording (split in a
gap between two notes of ``<inst>_notes.json``) for a CPU budget, then reports on the held-out rest:

* multi-scale spectral distance (the training loss: L1 of linear + log magnitudes, reference FFT sizes);
* f0 of the resynthesis (acids-data / swift-f0) against the input's: RPA = share of the input's voiced
  frames (confidence >= 0.5) within 50 cents (target >= 0.95);
* loudness L1 in dB (A-weighted, acids-data), over all frames and over voiced frames (target <= 2 dB);
* timbre transfer of the other instrument's phrase (flute by default) through the model, with the
  automatic adjustments of ``acids-ddsp transfer``: RPA of the output against the input f0 times the
  applied octave shift (target >= 0.9).

An autoencoder preset (``--preset small-ae``) takes z from the audio being resynthesised (the held-out
phrase, the flute phrase), as ``acids-ddsp transfer`` does; the transfer is also reported with the
training set's mean z (``transfer --mean-z``).

Usage (writes bench-out/ddsp-quality/<time>/{results.json,results.md,*.wav,*.png}):

    .venv/bin/python tools/bench/ddsp_quality.py --minutes 15              # the issue's budget
    .venv/bin/python tools/bench/ddsp_quality.py --minutes 2 --eval-seconds 10   # a smoke run
    .venv/bin/python tools/bench/ddsp_quality.py --preset small-48k --precisions int8,bf16

The trained checkpoint is also evaluated with the opt-in reduced-precision decoder weights
(``--precisions``, int8 by default): same figures, one column each.

Budget = CPU seconds of the training process (``time.process_time``, 1 torch thread; the shared machine's
load does not change it); a first short run measures the step cost, and resumed runs sized by the cost
measured on the previous one follow until less than 10 steps' worth is left (the spent CPU is reported).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "phrases"


def split_time(inst: str, duration: float, fraction: float = 0.8) -> float:
    """A time in the gap between two notes, nearest ``fraction`` of the recording."""
    notes = sorted(json.loads((DATA / f"{inst}_notes.json").read_text()), key=lambda n: n["t"])
    gaps = [(a["t"] + a["dur"] + b["t"]) / 2 for a, b in itertools.pairwise(notes)]
    return min(gaps, key=lambda g: abs(g - fraction * duration))


def rpa(ref_f0: np.ndarray, ref_conf: np.ndarray, est_f0: np.ndarray) -> float:
    voiced = ref_conf >= 0.5
    if not voiced.any():
        return float("nan")
    cents = 1200 * np.abs(np.log2(np.maximum(est_f0[voiced], 1e-3) / ref_f0[voiced]))
    return float(np.mean(cents <= 50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instrument", default="violin")
    ap.add_argument("--transfer-from", default="flute")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--minutes", type=float, default=15.0, help="CPU budget of training")
    ap.add_argument("--eval-seconds", type=float, default=0.0, help="cap the held-out audio (0: all)")
    ap.add_argument("--transfer-seconds", type=float, default=15.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "ddsp-quality")
    ap.add_argument(
        "--precisions",
        type=lambda v: [p for p in v.split(",") if p],
        default=["int8"],
        help="also evaluate the trained model with these opt-in decoder weights (bf16, int8; '' for none)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    from acids_data.features import compute_features
    from acids_ddsp import checkpoint, plots
    from acids_ddsp.config import preset
    from acids_ddsp.losses import from_config
    from acids_ddsp.train import train
    from acids_ddsp.transfer import adjust

    cfg = preset(args.preset)
    sr, hop = cfg.sample_rate, cfg.hop
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    src = DATA / str(sr) / f"{args.instrument}_phrases.flac"
    audio, file_sr = sf.read(src, dtype="float32")
    assert file_sr == sr, (file_sr, sr)
    cut = int(split_time(args.instrument, len(audio) / sr) * sr) // hop * hop
    (out / "train").mkdir()
    sf.write(out / "train" / f"{args.instrument}.wav", audio[:cut], sr)
    held = audio[cut:]
    if args.eval_seconds:
        held = held[: int(args.eval_seconds * sr)]
    held = held[: len(held) // hop * hop]

    exe = Path(sys.executable).with_name("acids-preprocess")
    cmd = [str(exe), str(out / "train"), "-o", str(out / "data"), "--sample-rate", str(sr)]
    cmd += ["--feature-hop", str(hop), "-j", "1", "-q"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    budget = args.minutes * 60
    run = out / "run"
    t0 = time.process_time()
    steps = 20  # a probe, then resumed runs sized by the measured cost until the budget is spent
    train(cfg, out / "data", run, steps=steps, checkpoint_every=10**9, tensorboard=False)
    per_step = (time.process_time() - t0) / steps  # includes the set-up: an over-estimate at first
    for _ in range(4):
        left = budget - (time.process_time() - t0)
        more = int(left / per_step)
        if more < 10:
            break
        t1 = time.process_time()
        steps += more
        train(cfg, out / "data", run, steps=steps, checkpoint_every=10**9, tensorboard=False)
        per_step = (time.process_time() - t1) / more  # each resume pays the set-up again: still safe
    train_cpu = time.process_time() - t0

    env = checkpoint.read(run / "last.ckpt")
    loss_fn = from_config(cfg)
    names = ["loudness", "f0"]
    fin = compute_features(held[None], sr, hop, names)
    voiced = fin["f0_confidence"] >= 0.5
    other, _ = sf.read(DATA / str(sr) / f"{args.transfer_from}_phrases.flac", dtype="float32")
    other = other[: int(args.transfer_seconds * sr) // hop * hop]
    fo = compute_features(other[None], sr, hop, names)
    f0_t, loudness_t, done = adjust(fo["f0"], fo["f0_confidence"], fo["loudness"], env["payload"]["stats"])
    shifted = fo["f0"] * 2.0 ** done["octaves"]

    def evaluate(precision: str) -> dict:
        """Held-out and transfer figures of the trained checkpoint with ``precision`` decoder weights."""
        model = checkpoint.load(run / "last.ckpt")
        model.set_precision(precision)
        tag = "" if precision == "fp32" else f"_{precision}"

        def resynth(f0: np.ndarray, loudness: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
            x = None
            if audio is not None and model.has_encoder:
                x = torch.from_numpy(np.ascontiguousarray(audio[: len(f0) * hop], dtype=np.float32))[None]
            with torch.inference_mode():
                return model(torch.from_numpy(f0)[None], torch.from_numpy(loudness)[None], x)[0, 0].numpy()

        y = resynth(fin["f0"], fin["loudness"], held)
        fout = compute_features(y[None], sr, hop, names)
        sf.write(out / f"heldout_resynth{tag}.wav", y, sr)
        with torch.no_grad():
            mss = float(loss_fn(torch.from_numpy(y)[None, None], torch.from_numpy(held)[None, None]))
        ld_err = np.abs(fout["loudness"] - fin["loudness"])
        res: dict = {
            "heldout": {
                "mss_distance": mss,
                "f0_rpa": rpa(fin["f0"], fin["f0_confidence"], fout["f0"]),
                "loudness_l1_db": float(ld_err.mean()),
                "loudness_l1_db_voiced": float(ld_err[voiced].mean()),
                "voiced_frames": int(voiced.sum()),
            }
        }
        if plots.available():
            plots.transfer_png(
                out / f"heldout{tag}.png", cfg.frame_rate, fin, (fin["f0"], fin["loudness"]), fout
            )
        z = resynth(f0_t, loudness_t, other)
        fz = compute_features(z[None], sr, hop, names)
        sf.write(out / f"{args.transfer_from}_as_{args.instrument}{tag}.wav", z, sr)
        if plots.available():
            plots.transfer_png(out / f"transfer{tag}.png", cfg.frame_rate, fo, (f0_t, loudness_t), fz)
        res["transfer"] = {
            "source": args.transfer_from,
            "seconds": len(other) / sr,
            "adjustments": done,
            "f0_rpa_vs_shifted_input": rpa(shifted, fo["f0_confidence"], fz["f0"]),
        }
        if model.has_encoder:
            zm = resynth(f0_t, loudness_t)  # the training set's mean z
            fm = compute_features(zm[None], sr, hop, names)
            sf.write(out / f"{args.transfer_from}_as_{args.instrument}_mean_z{tag}.wav", zm, sr)
            res["transfer"]["f0_rpa_vs_shifted_input_mean_z"] = rpa(shifted, fo["f0_confidence"], fm["f0"])
        return res

    results = {
        "instrument": args.instrument,
        "preset": args.preset,
        "train_seconds_audio": cut / sr,
        "heldout_seconds": len(held) / sr,
        "train_cpu_s": round(train_cpu, 1),
        "steps": int(env["payload"]["step"]),
        "final_train_loss": float(np.mean([v for _, v in env["payload"]["history"][-20:]])),
        **evaluate("fp32"),
        "precisions": {p: evaluate(p) for p in args.precisions},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    cols = [("fp32", results), *results["precisions"].items()]
    head = " | ".join(f"{name} weights" if name != "fp32" else "value" for name, _ in cols)

    def row(label: str, cell, target: str) -> str:
        return f"| {label} | " + " | ".join(cell(r) for _, r in cols) + f" | {target} |"

    t0 = results["transfer"]
    md = [
        f"# DDSP quality: {args.preset} on {args.instrument} ({results['steps']} steps, "
        f"{results['train_cpu_s']:.0f} CPU-s, 1 thread)",
        "",
        f"| figure | {head} | target |",
        "|---|" + "---|" * len(cols) + "---|",
        row("held-out MSS distance", lambda r: f"{r['heldout']['mss_distance']:.3f}", "(lower is better)"),
        row("held-out f0 RPA (50 cents, voiced)", lambda r: f"{r['heldout']['f0_rpa']:.3f}", ">= 0.95"),
        row(
            "held-out loudness L1 (all / voiced)",
            lambda r: (
                f"{r['heldout']['loudness_l1_db']:.2f} / {r['heldout']['loudness_l1_db_voiced']:.2f} dB"
            ),
            "<= 2 dB",
        ),
        row(
            f"{t0['source']} -> {args.instrument} RPA (octaves {t0['adjustments']['octaves']:+.0f})",
            lambda r: f"{r['transfer']['f0_rpa_vs_shifted_input']:.3f}",
            ">= 0.9",
        ),
    ]
    if "f0_rpa_vs_shifted_input_mean_z" in t0:
        md.append(
            row(
                "... same, the training set's mean z",
                lambda r: f"{r['transfer']['f0_rpa_vs_shifted_input_mean_z']:.3f}",
                ">= 0.9",
            )
        )
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
