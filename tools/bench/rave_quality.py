"""RAVE quality on held-out real audio (issue 3, "Quality"): the curve of a CPU-budgeted `small` run.

What it does (everything through the real command-line tools):

1. Data: ``/work/shared/data`` at 48 kHz: the velocity-80 notes (``notes/48000/*_080.flac``, 187 files,
   5 instruments), the 5 one-minute phrase recordings, the 141 GM drum one-shots and the drum groove.
   Split 80/10/10 BY FILE, per part, with a seeded shuffle (``--seed``): test and valid each take
   ``round(n / 10)`` files of a part (at least 1 when the part has 5 files or more), train the rest
   (the single groove file stays in train). The list is written to ``split.json``. Each split is
   preprocessed with ``acids-preprocess FILES -o bench-out/rave-quality/{train,valid,test}
   --sample-rate 44100 --channels 1 --features none`` (``--sample-rate 48000 --preset small-48k``: the
   48 kHz twin; 131072-sample chunks; a 4 s note gives one chunk,
   a one-shot one zero-padded chunk). Three datasets rather than acids-data's ChunkDataset split, which is
   two-way (train/valid by a hash of each file) and so cannot give a third, held-out test split;
   training runs with ``--set train.valid_fraction=0`` so it sees every train file and spends no budget
   on its own validation.
2. Untrained reference: ``acids-rave train ... --max-steps 0`` writes the exact initial weights of the run
   (the trainer seeds torch before building the model) as a checkpoint.
3. Training, ``acids-rave train --config small --batch 8 --set train.n_signal=32768 --threads 1`` for a
   budget of CPU TIME (``--budget-minutes``, default 20, i.e. 1200 CPU-seconds: user + system time of the
   training processes, all threads, read from /proc). CPU time rather than wall-clock, because the 2-core
   machine is shared: other jobs slow the wall clock, not the work done per CPU-second. One torch thread by
   default (``--threads``): with 2 threads on a busy machine the OpenMP workers spin-wait for each other
   and that waiting counts as CPU time (measured on this machine at a load average of ~8: 9.5 CPU-s per
   step with 2 threads, 1.25 with 1), so the budget would buy fewer steps the busier the machine. Phase 1
   runs with ``--phase1-steps`` and ``--max-steps`` out of reach and ``--emit-every N`` (a checkpoint saved
   and a ``checkpoint`` record emitted every N steps); at the first record after ``1 - --phase2-share`` of
   the budget the process is stopped (SIGTERM, just after that save) and its step becomes the phase
   boundary: the run is resumed with ``--resume --phase1-steps <that step>`` (phase 2: adversarial, encoder
   frozen) until the budget is spent, again stopped right after a save. The overshoot is at most one save
   interval. A checkpoint is copied out for the curve about every ``budget / --points`` CPU-seconds, plus
   the boundary and the last one. Wall-clock is recorded too. Finally ``--resume --max-steps <last step>``
   runs the latent analysis (outside the budget) so ``run/last.ckpt`` is a complete model.
4. Evaluation on the TEST files (``--eval-valid``: the valid files too): for the untrained model and every
   copied checkpoint, the multi-scale spectral distance of ``acids_rave.losses.spectral_distance`` with the
   model's ``loss.scales`` and ``log_epsilon`` -- the training definition, exactly as ``Trainer.validate``:
   PQMF reconstruction of the input vs the decoded posterior mean -- over every full 131072-sample test
   chunk, in fixed batches of 8 (the relative term divides by the batch energy, as in training),
   averaged over the batches. Eval mode: the decoder's noise branch, when the checkpoint has it on, reads
   its seeded noise table, as an exported model does.
   From the same reconstructions, loudness tracking (``held_out_scores``): the correlation of input and
   output frame levels over the active 46 ms frames of the same chunks, and the median level difference
   -- what the spectral distance does not show (a model that outputs the same quiet noise for any input
   scores well on it).

Usage (writes bench-out/rave-quality/{results.json,results.md,curve.png,split.json,ckpts/,run/}):

    .venv/bin/python tools/bench/rave_quality.py                       # 20 CPU-minutes, the issue's budget
    .venv/bin/python tools/bench/rave_quality.py --budget-minutes 3 --out bench-out/rave-quality-smoke
    # then, on a finished run: its phase 2 again from the boundary, full adversarial weights at once
    .venv/bin/python tools/bench/rave_quality.py --out bench-out/rave-quality-smoke --phase2-ablation 0
    # or add the loudness-tracking figures to a bench run before they existed
    .venv/bin/python tools/bench/rave_quality.py --out bench-out/rave-quality-20min --rescore

Pass-through training settings: ``--set key=value`` (repeatable), ``--batch``, ``--n-signal``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data")
BIG = 1_000_000_000
TARGET = 0.60


# --- data ----------------------------------------------------------------------------------------------


def parts(data: Path) -> dict[str, list[Path]]:
    return {
        "notes": sorted((data / "notes" / "48000").glob("*_080.flac")),
        "phrases": sorted((data / "phrases" / "48000").glob("*.flac")),
        "drums": sorted((data / "drums" / "gm" / "48000").glob("*.flac")),
        "grooves": sorted((data / "drums" / "grooves" / "48000").glob("*.flac")),
    }


def split_files(data: Path, seed: int) -> dict[str, dict[str, list[str]]]:
    """{part: {train|valid|test: [paths]}}: a seeded 80/10/10 split by file within each part."""
    out: dict[str, dict[str, list[str]]] = {}
    for part, files in parts(data).items():
        files = [str(f) for f in files]
        random.Random(f"{seed}/{part}").shuffle(files)
        n = len(files)
        k = max(1, round(n / 10)) if n >= 5 else 0
        out[part] = {
            "test": sorted(files[:k]),
            "valid": sorted(files[k : 2 * k]),
            "train": sorted(files[2 * k :]),
        }
    return out


def preprocess(files: list[str], dest: Path, log_path: Path, sample_rate: int = 44100) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("acids-preprocess")
    cmd = [
        str(exe),
        *files,
        "-o",
        str(dest),
        "--sample-rate",
        str(sample_rate),
        "--channels",
        "1",
        "--features",
        "none",
        "-q",
    ]
    with open(log_path, "a") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if p.returncode not in (0,):
        raise SystemExit(f"acids-preprocess failed ({p.returncode}), see {log_path}")
    rec = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return rec[-1] if rec else {}


# --- training ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Run:
    """One ``acids-rave train`` process, read record by record, stopped right after a save."""

    def __init__(self, cmd: list[str], log_path: Path):
        self.cmd = cmd
        self.err = open(log_path, "a")
        self.err.write("\n$ " + " ".join(cmd) + "\n")
        self.err.flush()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.cpu = float("nan")
        self.wall = float("nan")

    def records(self):  # type: ignore[no-untyped-def]
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("kind") == "checkpoint":
                    yield rec

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def cpu_now(self) -> float:
        return cpu_seconds(self.proc.pid)

    def finish(self, stop: bool) -> int:
        if stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.wall = self.elapsed()
        self.cpu = ru.ru_utime + ru.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
        return self.proc.returncode


def train_cmd(args: argparse.Namespace, data: Path, out: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("acids-rave")
    cmd = [str(exe), "train", "--data", str(data), "-o", str(out), "--threads", str(args.threads)]
    cmd += ["--val-every", str(BIG), "--save-every", str(BIG), *extra]
    return cmd


def config_args(args: argparse.Namespace) -> list[str]:
    cmd = ["--config", args.preset, "--batch", str(args.batch)]
    for s in [f"train.n_signal={args.n_signal}", "train.valid_fraction=0", *args.set]:
        cmd += ["--set", s]
    return cmd


def budgeted(
    run: Run, limit_s: float, offset_s: float, offset_cpu: float, curve: list[dict[str, Any]],
    ckpts: Path, every_s: float, phase: int,
) -> dict[str, Any] | None:  # fmt: skip
    """Copy checkpoints for the curve; stop at the first save after ``limit_s`` (total CPU seconds)."""
    next_mark = (int(offset_cpu / every_s) + 1) * every_s
    last = None
    for rec in run.records():
        t = offset_s + run.elapsed()
        cpu = offset_cpu + run.cpu_now()
        last = {"step": int(rec["step"]), "wall_s": t, "cpu_s": cpu, "phase": phase, "src": rec["path"]}
        done = cpu >= limit_s
        print(
            f"  step {last['step']:6d}  wall {t:7.1f} s  cpu {cpu:7.1f} s  phase {rec['phase']}", flush=True
        )
        if cpu >= next_mark or done:
            dest = ckpts / f"step-{last['step']:07d}.ckpt"
            shutil.copyfile(rec["path"], dest)
            curve.append({**last, "ckpt": str(dest)})
            while next_mark <= cpu:
                next_mark += every_s
        if done:
            break
    return last


# --- evaluation ----------------------------------------------------------------------------------------


def eval_batches(dataset: Path, batch: int) -> list[Any]:
    import torch

    from acids_data.dataset import ChunkDataset

    ds = ChunkDataset(str(dataset), keys=["audio"], crop=None, gain_db=None, split=None)
    items = [ds[i]["audio"] for i in range(len(ds))]
    return [torch.stack(items[i : i + batch]) for i in range(0, len(items), batch)]


FRAME = 2048  # samples per loudness frame (46 ms at 44.1 kHz)
ACTIVE_DB = -70.0  # frames of the reference quieter than this (dBFS RMS) are left out


def held_out_scores(ckpt: str, batches: list[Any]) -> dict[str, float]:
    """Scores of the posterior-mean reconstructions of fixed batches, each computed once:

    * ``mss``: mean over the batches of the training spectral distance (as Trainer.validate);
    * loudness tracking, over the frames of FRAME samples of every chunk where the reference (PQMF
      reconstruction of the input) is above ACTIVE_DB: ``loudness_corr``, the Pearson correlation of the
      reference's and the output's frame levels in dB (1: the output gets louder and quieter with the
      input; 0: its level ignores the input), and ``level_db``, the median of output minus reference
      level (0: same loudness; -20: ten times quieter). The spectral distance does not show either: a
      model that outputs the same quiet noise whatever the input already scores far below its
      untrained value.
    """
    import torch

    from acids_rave.checkpoint import load_model
    from acids_rave.losses import spectral_distance

    m = load_model(ckpt)
    cfg = m.config
    total = 0.0
    ref_db, out_db = [], []
    with torch.inference_mode():
        for x in batches:
            x_ref = m.pqmf.inverse(m.pqmf(x))
            y = m.pqmf.inverse(m.decode_bands(m.posterior(x)[0]))
            total += float(spectral_distance(x_ref, y, cfg.loss.scales, cfg.loss.log_epsilon))
            n = x_ref.shape[-1] // FRAME * FRAME
            for a, levels in ((x_ref, ref_db), (y, out_db)):
                frames = a[..., :n].reshape(-1, n // FRAME, FRAME)
                levels.append(10 * torch.log10(frames.pow(2).mean(-1) + 1e-12).reshape(-1))
    r, o = torch.cat(ref_db), torch.cat(out_db)
    active = r > ACTIVE_DB
    r, o = r[active].double(), o[active].double()
    rc, oc = r - r.mean(), o - o.mean()
    corr = float((rc * oc).sum() / (rc.norm() * oc.norm()).clamp_min(1e-12))
    return {
        "mss": total / len(batches),
        "loudness_corr": corr,
        "level_db": float((o - r).median()),
        "active_frames": int(active.sum()),
    }


def held_out_mss(ckpt: str, batches: list[Any]) -> float:
    """The spectral distance alone (see :func:`held_out_scores`)."""
    return held_out_scores(ckpt, batches)["mss"]


def silence_mss(ckpt: str, batches: list[Any]) -> float:
    """The same distance for a model that outputs silence (a reference for what the figures mean)."""
    import torch

    from acids_rave.checkpoint import load_model
    from acids_rave.losses import spectral_distance

    m = load_model(ckpt)
    cfg = m.config
    with torch.inference_mode():
        vals = []
        for x in batches:
            x_ref = m.pqmf.inverse(m.pqmf(x))
            vals.append(
                float(
                    spectral_distance(x_ref, torch.zeros_like(x_ref), cfg.loss.scales, cfg.loss.log_epsilon)
                )
            )
    return sum(vals) / len(vals)


def plot(
    path: Path,
    curve: list[dict[str, Any]],
    boundary: int | None,
    untrained: float,
    silence: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loud = [p for p in curve if "loudness_corr" in p]
    if loud:
        fig, (ax, ax2) = plt.subplots(
            2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
        )
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [p["step"] for p in curve]
    ax.plot(steps, [p["test_mss"] for p in curve], "o-", label="held-out test MSS")
    if any("valid_mss" in p for p in curve):
        pts = [p for p in curve if "valid_mss" in p]
        ax.plot([p["step"] for p in pts], [p["valid_mss"] for p in pts], "s--", alpha=0.6, label="valid MSS")
    ax.axhline(untrained * TARGET, color="tab:red", ls=":", label=f"{TARGET:.0%} of untrained")
    ax.axhline(silence, color="tab:green", ls="-.", alpha=0.6, label="a silent output")
    if boundary is not None:
        ax.axvline(boundary, color="gray", ls="--", label=f"phase 2 from step {boundary}")
    ax.set_ylabel("multi-scale spectral distance")
    sec = ax.secondary_yaxis("right", functions=(lambda v: v / untrained, lambda r: r * untrained))
    sec.set_ylabel("ratio to untrained")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if loud:
        # the spectral distance alone hides a model that outputs the same sound for any input
        ax2.plot([p["step"] for p in loud], [p["loudness_corr"] for p in loud], "o-", color="tab:purple")
        ax2.set_ylim(-0.2, 1.0)
        ax2.set_ylabel("loudness corr.\n(input vs output)")
        if boundary is not None:
            ax2.axvline(boundary, color="gray", ls="--")
        ax2.grid(alpha=0.3)
        ax2.set_xlabel("training step")
    else:
        ax.set_xlabel("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def phase2_ablation(out: Path, warmup: int, steps: int | None, batch: int) -> dict[str, Any]:
    """Re-run phase 2 of a finished bench from its boundary checkpoint with another adversarial warm-up.

    Same data order, augmentation and RNG as the bench's phase 2 (``Trainer.resume`` restores the RNG,
    the data position is a function of the step); only ``train.adversarial_warmup_steps`` differs. The
    same number of phase-2 steps as the bench (or ``steps``), then the same held-out score.
    """
    import dataclasses

    from acids_data.dataset import ChunkDataset
    from acids_rave.data import EpochBatches
    from acids_rave.train import Trainer

    res = json.loads((out / "results.json").read_text())
    summary = res["summary"]
    boundary = summary["boundary_step"]
    ckpt = next(p["ckpt"] for p in res["curve"] if p["step"] == boundary and p["phase"] == 1)
    n = steps if steps is not None else summary["phase2"]["steps"]
    trainer = Trainer.resume(ckpt)
    cfg = trainer.cfg
    train = dataclasses.replace(cfg.train, phase1_steps=boundary, adversarial_warmup_steps=warmup)
    trainer.cfg = trainer.model.config = dataclasses.replace(cfg, train=train)
    common = {"keys": ["audio"], "crop": train.n_signal, "valid_fraction": train.valid_fraction}
    ds = ChunkDataset(str(out / "train"), gain_db=train.gain_db, split="train", seed=train.seed, **common)
    it = EpochBatches(ds, train.batch, rank=0, world=1, seed=train.seed, workers=0).from_step(boundary)
    cpu0 = time.process_time()
    logs = [trainer.step(next(it)) for _ in range(n)]
    cpu = time.process_time() - cpu0
    dest = out / f"ablation-warmup-{warmup}.ckpt"
    trainer.save(dest)
    test = eval_batches(out / "test", batch)
    result = {
        "adversarial_warmup_steps": warmup,
        "boundary_step": boundary,
        "phase2_steps": n,
        "cpu_s": cpu,
        "boundary_test_mss": held_out_mss(ckpt, test),
        "final_test_mss": held_out_mss(str(dest), test),
        "bench_final_test_mss": summary["final_test_mss"],
        "last_log": logs[-1] if logs else {},
    }
    (out / f"ablation-warmup-{warmup}.json").write_text(json.dumps(result, indent=1))
    return result


def _fmt(v: float | None) -> str:
    return "?" if v is None else f"{v:.3g}"


def table_rows(curve: list[dict[str, Any]], boundary: int) -> list[str]:
    rows = [
        "| step | phase | wall-s | CPU-s | held-out MSS | ratio to untrained | loudness corr | level (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in curve:
        mark = " (boundary)" if p["step"] == boundary else ""
        rows.append(
            f"| {p['step']}{mark} | {p['phase']} | {p['wall_s']:.0f} | {p['cpu_s']:.0f} | "
            f"{p['test_mss']:.3f} | {p['ratio']:.3f} | {p['loudness_corr']:.2f} | {p['level_db']:.1f} |"
        )
    return rows


def rescore(out: Path, batch: int) -> None:
    """Add the loudness-tracking figures to a finished bench in ``out`` (results.json, results.md)."""
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no finished bench to rescore")
    res = json.loads(path.read_text())
    test = eval_batches(out / "test", batch)
    for p in res["curve"]:
        scores = held_out_scores(p["ckpt"], test)
        del scores["mss"]  # the run's own figure stays
        p.update(scores)
        print(
            f"step {p['step']}: loudness corr {p['loudness_corr']:.3f}, level {p['level_db']:.1f} dB",
            flush=True,
        )
    final = res["curve"][-1]
    res["summary"].update(final_loudness_corr=final["loudness_corr"], final_level_db=final["level_db"])
    path.write_text(json.dumps(res, indent=1))
    md = out / "results.md"
    old = md.read_text().split("\n\n", 1) if md.is_file() else ["", ""]
    rows = table_rows(res["curve"], res["summary"]["boundary_step"])
    md.write_text("\n".join(rows) + "\n\n" + (old[1] if len(old) > 1 else ""))
    replot(out, res)
    print(f"wrote {path}, {md}, {out / 'curve.png'}", flush=True)


def replot(out: Path, res: dict[str, Any]) -> None:
    """Draw ``out/curve.png`` from a bench's results.json content."""
    s = res["summary"]
    threads = f"{s['threads']} torch thread" + ("s" if s["threads"] > 1 else "")
    shape = f", batch {s['batch']} x {s['n_signal']}" if "batch" in s else ""
    title = (
        f"acids-rave {s['preset']}{shape}, {s['budget_minutes']:g} CPU-min budget "
        f"({s['train_cpu_s']:.0f} CPU-s, {threads}); final ratio {s['final_ratio']:.2f}"
    )
    plot(
        out / "curve.png",
        res["curve"],
        s["boundary_step"],
        s["untrained_test_mss"],
        s["silence_test_mss"],
        title,
    )


# --- main ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--budget-minutes", type=float, default=20.0, help="training budget in CPU-minutes of the process"
    )
    ap.add_argument("--phase2-share", type=float, default=0.25, help="last share of the budget in phase 2")
    ap.add_argument("--preset", default="small")
    ap.add_argument(
        "--sample-rate",
        type=int,
        default=44100,
        help="dataset rate (acids-preprocess --sample-rate); the run adopts it: 48000 trains the -48k twin",
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-signal", type=int, default=32768)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of training (1: CPU time is work, not spin-waits)",
    )
    ap.add_argument("--emit-every", type=int, default=5, help="phase-1 save/emit interval (steps)")
    ap.add_argument("--emit-every-2", type=int, default=2, help="phase-2 save/emit interval (steps)")
    ap.add_argument("--points", type=int, default=10, help="curve checkpoints over the budget")
    ap.add_argument("--seed", type=int, default=0, help="file split seed")
    ap.add_argument("--eval-valid", action="store_true", help="also evaluate the valid split")
    ap.add_argument("--no-finalize", action="store_true", help="skip the final latent analysis")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "rave-quality")
    ap.add_argument(
        "--phase2-ablation",
        type=int,
        default=None,
        metavar="WARMUP",
        help="no new run: re-run phase 2 of the finished bench in --out from its boundary checkpoint "
        "with train.adversarial_warmup_steps=WARMUP (same batches and RNG), score it, write "
        "ablation-warmup-WARMUP.json",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="no new run: add the loudness-tracking figures to the finished bench in --out",
    )
    ap.add_argument("--ablation-steps", type=int, default=None, help="phase-2 steps (default: the bench's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    if args.rescore:
        rescore(out, args.batch)
        return
    if args.phase2_ablation is not None:
        r = phase2_ablation(out, args.phase2_ablation, args.ablation_steps, args.batch)
        print(
            f"phase 2 with adversarial_warmup_steps={r['adversarial_warmup_steps']}, "
            f"{r['phase2_steps']} steps ({r['cpu_s']:.0f} CPU-s): "
            f"{r['boundary_test_mss']:.3f} -> {r['final_test_mss']:.3f} "
            f"(the bench's phase 2: {r['bench_final_test_mss']:.3f})",
            flush=True,
        )
        return
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "stderr.log"

    # 1. split + preprocess (resumable: acids-preprocess skips files it has done)
    split = split_files(DATA, args.seed)
    (out / "split.json").write_text(json.dumps({"seed": args.seed, "parts": split}, indent=1))
    counts = {s: {p: len(v[s]) for p, v in split.items()} for s in ("train", "valid", "test")}
    print("split (files per part):", json.dumps(counts), flush=True)
    datasets: dict[str, Path] = {}
    t0 = time.perf_counter()
    for s in ("train", "valid", "test"):
        files = [f for v in split.values() for f in v[s]]
        rec = preprocess(files, out / s, log_path, args.sample_rate)
        datasets[s] = out / s
        print(f"  {s}: {len(files)} files -> {rec.get('chunks', '?')} chunks", flush=True)
    print(f"preprocessing: {time.perf_counter() - t0:.1f} s", flush=True)

    # 2. untrained reference (the run's initial weights)
    ckpts = out / "ckpts"
    shutil.rmtree(ckpts, ignore_errors=True)
    ckpts.mkdir()
    run_dir, init_dir = out / "run", out / "run-init"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(init_dir, ignore_errors=True)
    cfg_args = config_args(args)
    r = Run(train_cmd(args, datasets["train"], init_dir, *cfg_args, "--max-steps", "0"), log_path)
    list(r.records())
    if r.finish(stop=False) != 0:
        raise SystemExit(f"untrained checkpoint failed, see {log_path}")
    shutil.copyfile(init_dir / "last.ckpt", ckpts / "step-0000000.ckpt")
    curve: list[dict[str, Any]] = [
        {"step": 0, "wall_s": 0.0, "cpu_s": 0.0, "phase": 1, "ckpt": str(ckpts / "step-0000000.ckpt")}
    ]

    # 3. budgeted training
    budget = args.budget_minutes * 60
    every = budget / args.points
    p1_limit = budget * (1 - args.phase2_share)
    commands = []
    cmd1 = train_cmd(args, datasets["train"], run_dir, *cfg_args, "--phase1-steps", str(BIG),
                     "--max-steps", str(BIG), "--emit-every", str(args.emit_every))  # fmt: skip
    commands.append(cmd1)
    print(f"phase 1 until {p1_limit:.0f} CPU-s: {' '.join(cmd1)}", flush=True)
    r1 = Run(cmd1, log_path)
    last1 = budgeted(r1, p1_limit, 0.0, 0.0, curve, ckpts, every, 1)
    rc = r1.finish(stop=True)
    if last1 is None:
        raise SystemExit(f"phase 1 emitted no checkpoint (exit {rc}), see {log_path}")
    boundary = last1["step"]
    p1 = {"steps": boundary, "wall_s": r1.wall, "cpu_s": r1.cpu}
    cmd2 = train_cmd(args, datasets["train"], run_dir, "--resume", "--phase1-steps", str(boundary),
                     "--max-steps", str(BIG), "--emit-every", str(args.emit_every_2))  # fmt: skip
    commands.append(cmd2)
    print(f"phase 2 from step {boundary} until {budget:.0f} CPU-s: {' '.join(cmd2)}", flush=True)
    r2 = Run(cmd2, log_path)
    last2 = budgeted(r2, budget, r1.wall, r1.cpu, curve, ckpts, every, 2)
    rc = r2.finish(stop=True)
    if last2 is None:
        raise SystemExit(f"phase 2 emitted no checkpoint (exit {rc}), see {log_path}")
    p2 = {"steps": last2["step"] - boundary, "wall_s": r2.wall, "cpu_s": r2.cpu}
    train_wall, train_cpu = r1.wall + r2.wall, r1.cpu + r2.cpu
    # the exact CPU totals replace the live readings of the last points of each phase
    for p in curve:
        if p["step"] == boundary and p["phase"] == 1:
            p.update(wall_s=r1.wall, cpu_s=r1.cpu)
    curve[-1].update(wall_s=train_wall, cpu_s=train_cpu)
    print(f"training: {last2['step']} steps, {train_wall:.0f} s wall, {train_cpu:.0f} CPU-s", flush=True)
    if not args.no_finalize:
        cmd3 = train_cmd(args, datasets["train"], run_dir, "--resume", "--phase1-steps", str(boundary),
                         "--max-steps", str(last2["step"]))  # fmt: skip
        r3 = Run(cmd3, log_path)
        list(r3.records())
        if r3.finish(stop=False) != 0:
            print(f"warning: the final latent analysis failed, see {log_path}", flush=True)

    # 4. evaluation
    t0 = time.perf_counter()
    test = eval_batches(datasets["test"], args.batch)
    valid = eval_batches(datasets["valid"], args.batch) if args.eval_valid else None
    n_test = sum(int(b.shape[0]) for b in test)
    print(
        f"evaluating {len(curve)} checkpoints on {n_test} test chunks "
        f"({n_test * 131072 / args.sample_rate:.0f} s)",
        flush=True,
    )
    for p in curve:
        scores = held_out_scores(p["ckpt"], test)
        p["test_mss"] = scores.pop("mss")
        p.update(scores)
        if valid is not None:
            p["valid_mss"] = held_out_mss(p["ckpt"], valid)
    untrained = curve[0]["test_mss"]
    silence = silence_mss(curve[0]["ckpt"], test)
    for p in curve:
        p["ratio"] = p["test_mss"] / untrained
    eval_s = time.perf_counter() - t0
    at_boundary = next(p for p in curve if p["step"] == boundary)
    final = curve[-1]
    last_log: dict[str, Any] = {}
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file():
        lines = [ln for ln in metrics_path.read_text().splitlines() if ln.strip()]
        last_log = json.loads(lines[-1]) if lines else {}
    summary = {
        "preset": args.preset,
        "batch": args.batch,
        "n_signal": args.n_signal,
        "budget_minutes": args.budget_minutes,
        "budget_kind": "CPU time of the training processes",
        "phase2_share": args.phase2_share,
        "overrides": args.set,
        "final_lr": last_log.get("lr"),
        "final_adversarial_ramp": last_log.get("adversarial_ramp"),
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "threads": args.threads,
        "phase1": p1,
        "phase2": p2,
        "boundary_step": boundary,
        "untrained_test_mss": untrained,
        "silence_test_mss": silence,
        "boundary_test_mss": at_boundary["test_mss"],
        "final_test_mss": final["test_mss"],
        "final_ratio": final["ratio"],
        "final_loudness_corr": final["loudness_corr"],
        "final_level_db": final["level_db"],
        "target_ratio": TARGET,
        "meets_target": final["ratio"] < TARGET,
        "phase2_change": final["test_mss"] - at_boundary["test_mss"],
        "phase2_worse": final["test_mss"] > at_boundary["test_mss"],
        "test_chunks": n_test,
        "eval_s": eval_s,
    }

    rows = table_rows(curve, boundary)
    verdict = [
        f"reference: a silent output scores {silence:.3f} ({silence / untrained:.3f} of untrained)",
        f"budget {args.budget_minutes:g} CPU-minutes, {args.threads} torch threads: {train_cpu:.0f} CPU-s "
        f"used in {train_wall:.0f} s wall ({train_cpu / max(train_wall, 1e-9):.2f} cores on average)",
        f"phase 1: {p1['steps']} steps, {p1['cpu_s']:.0f} CPU-s; "
        f"phase 2: {p2['steps']} steps, {p2['cpu_s']:.0f} CPU-s",
        f"final ratio {final['ratio']:.3f} vs target < {TARGET:.2f}: "
        f"{'MET' if summary['meets_target'] else 'NOT MET'}",
        f"loudness tracking at the last step: correlation {final['loudness_corr']:.2f}, output level "
        f"{final['level_db']:+.1f} dB against the input (see held_out_scores)",
        f"phase 2: {at_boundary['test_mss']:.3f} -> {final['test_mss']:.3f} "
        f"({'WORSE' if summary['phase2_worse'] else 'not worse'}); at the last step the generator lr is "
        f"{_fmt(summary['final_lr'])} and the adversarial weights are at "
        f"{_fmt(summary['final_adversarial_ramp'])} of their values (train.adversarial_warmup_steps)",
    ]
    text = "\n".join([*rows, "", *verdict])
    print(text, flush=True)
    (out / "results.md").write_text(text + "\n")
    res = {"summary": summary, "curve": curve, "commands": commands, "split_counts": counts}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    replot(out, res)
    print(f"wrote {out / 'results.json'}, {out / 'curve.png'}", flush=True)


if __name__ == "__main__":
    main()
