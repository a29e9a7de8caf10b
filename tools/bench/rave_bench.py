"""acids-rave vs the official acids-rave 2.3.1: offline, streaming and training speed, side by side.

    .venv/bin/python tools/bench/rave_bench.py [--rounds 2] [--tasks offline,stream,train] [--threads 1]

The official package is installed by this script into bench-out/venv-rave-full (torch pinned to the
local 2.13.0 CPU wheel by a constraints file on every pip call; acids-rave, cached-conv, nn-tilde and udls
with --no-deps, then the modules they import: gin-config, einops, scipy==1.10.0 + numpy==1.26.4 for the
PQMF's ``firwin(nyq=)``, pytorch-lightning==1.9.0 + setuptools<81, librosa, GPUtil, lmdb, flask, ...).
torchaudio from PyPI is a CUDA build that does not load here, so the venv gets a small torchaudio shim
(``sitecustomize`` registers it in sys.modules: ``transforms.Spectrogram`` on torch.stft, everything else
raises); nothing outside that venv sees it.

Same audio for both (10 s of the violin phrases at 48 kHz resampled to 44.1 kHz), same thread count,
each measurement in its own fresh process (peak RSS via measure.py), official and ours interleaved,
the order alternating per round; the best (offline, stream) or median (train) of each side is compared.

* offline: encode + decode of the 10 s (official: ``encode`` + ``reparametrize`` + ``decode`` of the
  eager model, weight norm on, as in reference/rave.md; ours: the fused eager model, float32, and in the
  same rounds with the opt-in bfloat16 weights unless ``--no-offline-bf16``).
* stream: 2048-sample buffers through ``forward`` of the exported streaming TorchScript (official: the
  real ``rave export --streaming`` of an untrained v2/v1 checkpoint; ours: ``script(exportable(...))``).
* train: one phase-1 step (official: ``RAVE.training_step`` through pytorch-lightning; ours:
  ``Trainer.step``), same config, batch and signal length, after ``--warmup-steps`` untimed steps (2).

``--winograd-ab`` adds, in the same rounds, ours (float32) with the Winograd F(6, 3) path of
``acids_rave.blocks.Conv1d`` switched off on every layer (``ours-no-winograd``, offline and train): the
effect of that path measured in the same run as the comparison with the official.

``--malloc-ab`` adds, in the same rounds (offline, train), ours with glibc's default allocator
(``ours-system-malloc``: ``ACIDS_MALLOC=system``, see ``acids_rave.runtime``) and the official with the
same allocator setting as ours (``official-kept-malloc``: ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` in its environment, glibc's own variables for the same two
parameters): the setting's effect on each side, measured beside the comparison.

``--clock cpu`` makes both workers' timers read the process's CPU time instead of the wall clock (the
official worker runs unmodified, its ``time.perf_counter`` replaced): with one thread that is the work
done, which other jobs on a shared machine disturb much less than the wall clock.

Results: bench-out/rave-bench/results.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

OUT = benchlib.BENCH_OUT / "rave-bench"
VENV = benchlib.BENCH_OUT / "venv-rave-full"
AUDIO = OUT / "audio_10s_44k.npy"
OURS_PY = benchlib.REPO / ".venv" / "bin" / "python"
NO_DEPS = ("acids-rave==2.3.1", "cached-conv==2.5.0", "nn-tilde==1.5.6", "udls==1.1.4")
DEPS = (
    "numpy==1.26.4",
    "scipy==1.10.0",
    "pytorch-lightning==1.9.0",
    "setuptools<81",
    "gin-config==0.5.0",
    "einops",
    "GPUtil",
    "librosa",
    "lmdb",
    "protobuf",
    "absl-py",
    "pyyaml",
    "tqdm",
    "scikit-learn",
    "requests",
    "flask",
)

TORCHAUDIO_SHIM = '''"""torchaudio stand-in, written by tools/bench/rave_bench.py into the bench venv.

The PyPI torchaudio wheel is a CUDA build that does not load on this CPU machine. acids-rave 2.3.1 needs
only transforms.Spectrogram at model build/train time; this is it on torch.stft with torchaudio's
defaults and "window" normalisation. Anything else raises when used.
"""
import sys
import types

import torch


class Spectrogram(torch.nn.Module):
    def __init__(self, n_fft=400, win_length=None, hop_length=None, pad=0, window_fn=torch.hann_window,
                 power=2.0, normalized=False, wkwargs=None, center=True, pad_mode="reflect", onesided=True,
                 return_complex=None):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.pad = pad
        self.register_buffer("window", window_fn(self.win_length, **(wkwargs or {})))
        self.power = power
        self.normalized = normalized
        self.center = center
        self.pad_mode = pad_mode or "reflect"
        self.onesided = onesided

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad, self.pad))
        s = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=self.center,
                       pad_mode=self.pad_mode, normalized=False, onesided=self.onesided, return_complex=True)
        if self.normalized is True or self.normalized == "window":
            s = s / self.window.pow(2).sum().sqrt()
        s = s.reshape(shape[:-1] + s.shape[-2:])
        if self.power is None:
            return s
        return s.abs().pow(self.power)


class _Missing:
    def __init__(self, name):
        self.name = name

    def __call__(self, *a, **k):
        raise RuntimeError(f"torchaudio shim: {self.name} is not available in this benchmark venv")

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Missing(f"{self.name}.{item}")


def _lazy(prefix):
    def getattr_(item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Missing(prefix + item)

    return getattr_


def install():
    ta = types.ModuleType("torchaudio")
    tr = types.ModuleType("torchaudio.transforms")
    tr.Spectrogram = Spectrogram
    tr.MelSpectrogram = _Missing("transforms.MelSpectrogram")
    tr.Resample = _Missing("transforms.Resample")
    fn = types.ModuleType("torchaudio.functional")
    fn.__getattr__ = _lazy("functional.")
    ta.transforms, ta.functional = tr, fn
    ta.__getattr__ = _lazy("")
    ta.__version__ = "0.0+bench-shim"
    sys.modules.update({"torchaudio": ta, "torchaudio.transforms": tr, "torchaudio.functional": fn})
'''

SITECUSTOMIZE = """import importlib.util
if importlib.util.find_spec("torchaudio") is None:
    import _bench_torchaudio_shim
    _bench_torchaudio_shim.install()
"""


# ---------------------------------------------------------------------------------------------------------
# setup


def ensure_venv() -> dict[str, str]:
    stamp = VENV / ".bench-installed"
    want = " ".join([benchlib.TORCH_PIN, *NO_DEPS, *DEPS])
    if not (stamp.exists() and stamp.read_text().splitlines()[0] == want):
        log = VENV.parent / f"{VENV.name}-install.log"
        print(f"installing the official acids-rave into {VENV} (log: {log}) ...", file=sys.stderr)
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        cons = VENV / "constraints.txt"
        cons.write_text(benchlib.TORCH_PIN + "\n")
        benchlib._pip(VENV, "-c", str(cons), benchlib.TORCH_PIN, log=log)
        benchlib._pip(VENV, "-c", str(cons), "--no-deps", *NO_DEPS, log=log)
        benchlib._pip(VENV, "-c", str(cons), *DEPS, log=log)
        stamp.write_text(want + "\n")
    site = next((VENV / "lib").glob("python3.*/site-packages"))
    (site / "_bench_torchaudio_shim.py").write_text(TORCHAUDIO_SHIM)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    code = (
        "import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {!r}}}))".format(
            [
                "acids-rave",
                "torch",
                "cached-conv",
                "nn-tilde",
                "gin-config",
                "pytorch-lightning",
                "numpy",
                "scipy",
            ],
        )
    )
    r = subprocess.run([str(VENV / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    versions = json.loads(r.stdout)
    if not versions["torch"].startswith("2.13.0"):
        raise RuntimeError(f"the official venv has torch {versions['torch']}, expected 2.13.0")
    return versions


def ensure_audio() -> Path:
    if not AUDIO.is_file():
        import numpy as np

        from acids_data.audio import load

        x = load(benchlib.DATA_ROOT / "phrases" / "48000" / "violin_phrases.flac", 44100, 1)
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(AUDIO, np.ascontiguousarray(x[0, 5 * 44100 : 15 * 44100], dtype=np.float32))
    return AUDIO


#: the timers both workers read (``time.perf_counter`` is replaced by the chosen one in each worker)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CPU_CLOCK_SHIM = (
    "import runpy, sys, time; time.perf_counter = time.process_time; sys.argv = sys.argv[1:]; "
    "sys.path.insert(0, __import__('os').path.dirname(sys.argv[0])); "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _json_line(path: str) -> dict[str, Any]:
    lines = [x for x in Path(path).read_text().splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result in {path}; see {path.replace('.stdout', '.stderr')}")
    return json.loads(lines[-1])


def official_export(config: str, threads: int) -> dict[str, Any]:
    """An untrained official checkpoint, then the real `rave export --streaming`. Cached."""
    run = OUT / f"official-{config}"
    ts = run / f"{config}_streaming.ts"
    if ts.is_file():
        return {"ok": True, "ts": str(ts)}
    py = str(VENV / "bin" / "python")
    env = {**_env(threads)}
    subprocess.run(
        [py, str(HERE / "rave_official.py"), "checkpoint", "--config", config, "--run", str(run)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    cmd = [py, "-m", "scripts.export", "--run", str(run) + "/", "--streaming", "--name", config]
    cmd += ["--output", str(run)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(OUT))
    (run / "export.log").write_text(r.stdout + r.stderr)
    if r.returncode or not ts.is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return {"ok": False, "why": " | ".join(tail), "log": str(run / "export.log")}
    return {"ok": True, "ts": str(ts)}


#: the official side with ours's allocator setting (acids_rave.runtime), through glibc's own variables
KEPT_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def _env(threads: int, **extra: str) -> dict[str, str]:
    import os

    t = str(threads)
    env = {k: v for k, v in os.environ.items() if k not in ("ACIDS_MALLOC", *KEPT_MALLOC_ENV)}
    return {**env, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "PYTHONWARNINGS": "ignore", **extra}


# ---------------------------------------------------------------------------------------------------------
# our side (runs in the dev venv: `rave_bench.py worker TASK ...`)


def worker(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from acids_rave.config import load_config
    from acids_rave.model import Rave

    if not a.system_malloc:
        from acids_rave.runtime import keep_freed_memory

        keep_freed_memory()  # as the acids-rave command does at start
    torch.set_num_threads(a.threads)
    time.perf_counter = CLOCKS[a.clock]  # --clock cpu: process CPU seconds, as the official worker gets
    cfg = load_config(a.config)
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(a.audio))[None, None]
    if a.tile > 1:  # a longer input: the audio repeated
        x = x.repeat(1, 1, a.tile)
    if a.task == "offline":
        model = Rave(cfg).eval()
        model.fuse()
        if a.no_winograd:
            _winograd_off(model)
        if a.precision == "bf16":
            model.set_precision("bf16")  # opt-in bfloat16 convolution weights (see the README)
        times = []
        with torch.inference_mode():
            for _ in range(a.reps + 1):
                t0 = time.perf_counter()
                if a.offline_block:  # as `acids-rave transfer --block N` runs a long input
                    model.in_blocks("forward", x, a.offline_block)
                else:
                    model.decode(model.encode(x))
                times.append(time.perf_counter() - t0)
        return {"seconds": min(times[1:]), "all": times}
    if a.task == "stream":
        from acids_rave.export import exportable, script

        ts = script(exportable(Rave(cfg).eval(), streaming=True, precision=a.precision))
        n = x.shape[-1] // a.block
        best = None
        with torch.inference_mode():
            for i in range(4):
                ts(x[..., i * a.block : (i + 1) * a.block])
            for _ in range(a.reps):
                t0 = time.perf_counter()
                for i in range(n):
                    ts(x[..., i * a.block : (i + 1) * a.block])
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
        return {"seconds": best, "blocks": n, "block": a.block}
    if a.task == "train":
        import dataclasses

        from acids_rave.train import Trainer

        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, batch=a.batch, n_signal=a.n_signal, phase1_steps=10**9)
        )
        trainer = Trainer(cfg)
        if a.no_winograd:
            _winograd_off(trainer.model)
        g = torch.Generator().manual_seed(0)
        data = 0.3 * torch.randn(a.batch, 1, a.n_signal, generator=g)
        times = []
        for _ in range(a.steps + a.warmup_steps):
            t0 = time.perf_counter()
            trainer.step(data)
            times.append(time.perf_counter() - t0)
        return {"step_s": times[a.warmup_steps :], "warmup_s": times[: a.warmup_steps]}
    raise ValueError(a.task)


def _winograd_off(model: Any) -> None:
    """Every acids_rave Conv1d back on the convolution library (the code before the Winograd path)."""
    from acids_rave.blocks import Conv1d

    for m in model.modules():
        if isinstance(m, Conv1d):
            m.winograd = 0


# ---------------------------------------------------------------------------------------------------------
# driver


def run_one(impl: str, task: str, config: str, a: argparse.Namespace, ts: str | None, tag: str) -> dict:
    common = ["--config", config, "--threads", str(a.threads), "--audio", str(AUDIO)]
    if task == "offline":
        extra = ["--reps", "2"]
    elif task == "stream":
        extra = ["--reps", "1", "--block", "2048"]
    else:
        extra = ["--batch", str(a.batch), "--n-signal", str(a.n_signal), "--steps", str(a.steps)]
        extra += ["--warmup-steps", str(a.warmup_steps)]
    env = _env(a.threads, **(KEPT_MALLOC_ENV if impl == "official-kept-malloc" else {}))
    if impl.startswith("official"):
        cmd = [str(VENV / "bin" / "python"), str(HERE / "rave_official.py"), task, *common, *extra]
        if a.clock == "cpu":  # the unmodified official worker, its time.perf_counter read as CPU time
            cmd[1:2] = ["-c", CPU_CLOCK_SHIM, str(HERE / "rave_official.py")]
        if task == "stream":
            cmd += ["--model", ts]
    else:
        cmd = [str(OURS_PY), str(Path(__file__).resolve()), "worker", task, *common, *extra]
        cmd += ["--clock", a.clock]
        if impl == "ours-bf16":
            cmd += ["--precision", "bf16"]
        if impl == "ours-no-winograd":
            cmd += ["--no-winograd"]
        if impl == "ours-system-malloc":
            cmd += ["--system-malloc"]
    m = benchlib.measured(cmd, OUT / "runs", tag, timeout=1800, env=env)
    if m["rc"] != 0:
        return {"error": f"rc={m['rc']}, see {m['stderr_path']}", "measure": m}
    res = _json_line(m["stdout_path"])
    res["maxrss_mib"] = round(m["maxrss_kib"] / 1024, 1)
    res["cpu_s"] = m["cpu_s"]
    res["loadavg"] = m["loadavg_before"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("task", choices=["offline", "stream", "train"])
    for p in (ap, w):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--n-signal", type=int, default=65536)
        p.add_argument("--steps", type=int, default=3)
        p.add_argument(
            "--warmup-steps",
            type=int,
            default=2,
            help="untimed training steps first (both sides: the second step is still ~10%% slower)",
        )
    w.add_argument("--config", default="v2")
    w.add_argument("--audio", default=str(AUDIO))
    w.add_argument("--reps", type=int, default=2)
    w.add_argument("--block", type=int, default=2048)
    w.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    w.add_argument("--clock", default="wall", choices=sorted(CLOCKS))
    w.add_argument("--no-winograd", action="store_true", help="switch the Winograd conv path off")
    w.add_argument("--system-malloc", action="store_true", help="leave glibc's allocator as it is")
    w.add_argument("--tile", type=int, default=1, help="offline: the audio repeated N times")
    w.add_argument(
        "--offline-block", type=int, default=0, help="offline: in blocks of N samples (0: one call)"
    )
    ap.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="what both sides' timers read: wall-clock seconds, or the process's CPU seconds (with one "
        "thread, the work done, less sensitive to other jobs on a shared machine)",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tasks", default="offline,stream,train")
    ap.add_argument("--stream-configs", default="v2,v1")
    ap.add_argument(
        "--stream-bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also stream ours with bfloat16 weights (exportable(precision='bf16')), same rounds",
    )
    ap.add_argument(
        "--offline-bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run ours offline with bfloat16 weights (model.set_precision('bf16')), same rounds",
    )
    ap.add_argument(
        "--winograd-ab",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run ours with the Winograd convolution path off (offline, train), same rounds",
    )
    ap.add_argument(
        "--malloc-ab",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run ours with glibc's default allocator and the official with ours's setting "
        "(offline, train), same rounds",
    )
    ap.add_argument("--out-name", default="results.json", help="file name under bench-out/rave-bench/")
    a = ap.parse_args()
    if a.cmd == "worker":
        print(json.dumps({**worker(a), "impl": "ours", "task": a.task, "config": a.config}))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    versions = ensure_venv()
    ensure_audio()
    tasks = a.tasks.split(",")
    plan: list[tuple[str, str]] = []
    exports: dict[str, Any] = {}
    for t in tasks:
        if t == "stream":
            for c in a.stream_configs.split(","):
                exports[c] = official_export(c, a.threads)
                plan.append((t, c))
        else:
            plan.append((t, "v2"))
    results: dict[str, dict[str, list[dict]]] = {}
    for rnd in range(a.rounds):
        for task, config in plan:
            key = f"{task}/{config}"
            impls = ["official", "ours"]
            if (task == "stream" and a.stream_bf16) or (task == "offline" and a.offline_bf16):
                impls.append("ours-bf16")
            if task in ("offline", "train") and a.winograd_ab:
                impls.append("ours-no-winograd")
            if task in ("offline", "train") and a.malloc_ab:
                impls += ["ours-system-malloc", "official-kept-malloc"]
            shift = rnd % len(impls)  # rotate the order per round
            order = impls[shift:] + impls[:shift]
            for impl in order:
                if impl.startswith("official") and task == "stream" and not exports[config]["ok"]:
                    continue
                print(f"round {rnd + 1}: {key} {impl} ...", file=sys.stderr, flush=True)
                r = run_one(
                    impl,
                    task,
                    config,
                    a,
                    exports.get(config, {}).get("ts"),
                    f"{key}-{impl}-{rnd}".replace("/", "-"),
                )
                results.setdefault(key, {}).setdefault(impl, []).append(r)
    summary = summarize(results, a)
    doc = {
        "machine": benchlib.machine_info(),
        "official_versions": versions,
        "threads": a.threads,
        "train_batch": [a.batch, a.n_signal],
        "exports": exports,
        "results": results,
        "summary": summary,
        "clock": a.clock,
        "command": " ".join(sys.argv),
    }
    (OUT / a.out_name).write_text(json.dumps(doc, indent=1))
    print(table(summary, a))
    return 0


def summarize(results: dict, a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, by in results.items():
        task = key.split("/")[0]
        row: dict[str, Any] = {}
        for impl, runs in by.items():
            ok = [r for r in runs if "error" not in r]
            if not ok:
                row[impl] = {"error": runs[0].get("error")}
                continue
            if task == "train":
                steps = [s for r in ok for s in r["step_s"]]
                row[impl] = {
                    "step_s": statistics.median(steps),
                    "maxrss_mib": max(r["maxrss_mib"] for r in ok),
                }
            else:
                secs = min(r["seconds"] for r in ok)
                row[impl] = {
                    "seconds": secs,
                    "rtf": 10.0 / secs,
                    "maxrss_mib": max(r["maxrss_mib"] for r in ok),
                }
        o = row.get("official", {"error": 1})
        for impl in [i for i in row if i.startswith("ours")]:
            u = row[impl]
            if "error" in o or "error" in u:
                continue
            ratio = o["step_s"] / u["step_s"] if task == "train" else o["seconds"] / u["seconds"]
            row["ratio" + impl[len("ours") :]] = ratio
        k, u = row.get("official-kept-malloc", {"error": 1}), row.get("ours", {"error": 1})
        if "error" not in k and "error" not in u:  # both sides with the same allocator setting
            unit = "step_s" if task == "train" else "seconds"
            row["ratio_vs_official_kept_malloc"] = k[unit] / u[unit]
            row["official_malloc_speedup"] = o[unit] / k[unit] if "error" not in o else None
        u, off = row.get("ours", {"error": 1}), row.get("ours-no-winograd", {"error": 1})
        if "error" not in u and "error" not in off:
            unit = "step_s" if task == "train" else "seconds"
            row["winograd_speedup"] = off[unit] / u[unit]  # same rounds: Winograd off / on
        out[key] = row
    return out


def _cell(d: dict) -> str:
    if "error" in d or not d:
        return "n/a"
    if "step_s" in d:
        return f"{d['step_s']:.2f} s/step"
    return f"{d['rtf']:.2f}x real time"


def table(summary: dict, a: argparse.Namespace) -> str:
    lines = [
        f"| task (1 process, {a.threads} thread, {a.clock} clock) | official 2.3.1 | ours "
        "| ours/official speed | peak RSS official / ours |",
        "|---|---|---|---|---|",
    ]
    for key, row in summary.items():
        task, config = key.split("/")
        label = {
            "offline": "offline encode+decode 10 s",
            "stream": "streaming, 2048 buffers",
            "train": f"train step phase 1, batch {a.batch}x{a.n_signal}",
        }[task]
        if "official-kept-malloc" in row:
            o, k = row.get("official", {}), row["official-kept-malloc"]
            mem = f"{o.get('maxrss_mib', 'n/a')} / {k.get('maxrss_mib', 'n/a')} MiB"
            sp = row.get("official_malloc_speedup")
            sp_s = f"{sp:.2f}x (official: setting on / off)" if sp else "n/a"
            lines.append(
                f"| {label} ({config}, the official with ours's allocator setting) | {_cell(o)} | {_cell(k)} "
                f"| {sp_s} | {mem} |"
            )
        for impl in [i for i in row if i.startswith("ours") and not i.startswith("ratio")]:
            o, u = row.get("official", {}), row[impl]
            rkey = "ratio" + impl[len("ours") :]
            ratio = f"{row[rkey]:.2f}x" if rkey in row else "n/a"
            mem = f"{o.get('maxrss_mib', 'n/a')} / {u.get('maxrss_mib', 'n/a')} MiB"
            variant = {
                "ours-bf16": ", bf16 weights",
                "ours-no-winograd": ", Winograd off",
                "ours-system-malloc": ", glibc's default allocator",
            }.get(impl, "")
            lines.append(f"| {label} ({config}{variant}) | {_cell(o)} | {_cell(u)} | {ratio} | {mem} |")
    for key, row in summary.items():
        if "winograd_speedup" in row:
            lines.append(f"\n{key}: ours with the Winograd path / without it: {row['winograd_speedup']:.3f}x")
    for key, row in summary.items():
        if "ratio_vs_official_kept_malloc" in row:
            lines.append(
                f"\n{key}: ours / the official, both with the allocator setting: "
                f"{row['ratio_vs_official_kept_malloc']:.2f}x"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
