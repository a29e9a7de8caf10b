#!/usr/bin/env python3
"""acids-ddsp vs acids-ircam/ddsp_pytorch: offline synthesis, streaming calls, training step, peak memory
(issue 4, "Performance (same-run ratios)").

    .venv/bin/python tools/bench/ddsp_speed.py                 # ~5 min on 2 shared cores; markdown on stdout
    .venv/bin/python tools/bench/ddsp_speed.py --rounds 1 --no-train --no-memory   # quick look

What it does:

* **Baseline source**: ddsp_pytorch's tree is exported (``git archive``) from a local mirror
  (``--baseline-git``, default the `fetch` mirror under /work/.mirror) or cloned from GitHub into
  ``bench-out/ddsp-speed/ddsp_pytorch`` (git-ignored; nothing of it enters the repo). Its own
  ``ddsp/model.py`` ``DDSP`` class is built with its shipped ``config.yaml`` sizes.
* **Baseline venv** ``bench-out/venv-ddsp-pytorch``: torch==2.13.0 pinned by a constraints file on every pip
  call (never another torch, never torchaudio) + numpy, librosa, einops, effortless_config, pyyaml,
  soundfile, tqdm, scipy. ``crepe`` (TensorFlow; its sdist downloads weights at build time) is **not**
  installed: a stub module stands in for it, as ``ddsp/core.py`` imports it at module level for
  ``extract_pitch`` (feature extraction, never called here).
* **Baseline TorchScript**: its own ``export.py --realtime true`` run on a run directory made here (its
  ``config.yaml`` at 48 kHz / block 512, loudness mean 0 / std 1, the untrained state_dict): the
  ``ddsp_<name>_pretrained.ts`` its Pd external ``ddsp~`` loads (audio-rate pitch/loudness in, realtime
  path, no reverb).
* **Ours**: ``acids_ddsp`` presets ``full`` (16 kHz; hop set to the baseline's block for each case) and
  ``full-48k``: decoder width 512, 3 layers per MLP stack, GRU 512, 100 harmonics, 65 noise bands, 1 s
  reverb, as the baseline. Ours has more parameters because its input MLPs are not shared (the baseline's
  bug) and its output MLP sees both embeddings + the GRU (magenta's RnnFcDecoder).
* **Controls**: acids-data features (f0, A-weighted loudness dB) of the first 10 s of voiced violin in
  /work/shared/data/phrases (the real input of a transfer), computed at each case's rate and block; the
  baseline gets the same f0 and the loudness standardised (its train-time normalisation; its units are
  ln-amplitude + A-weighting dB, the values do not change its cost). ``low`` cases replace f0 by a
  60 → 78 Hz glide, so all 100 harmonics stay below Nyquist: our synth then computes every harmonic (it skips
  harmonics muted in a whole chunk, which a violin's f0 mostly makes > 20 of the 100 at 16 kHz).
* **Measurement**: two persistent worker processes (ours in the dev venv, the baseline in its venv),
  1 torch thread each (``torch.set_num_threads(1)``, OMP/MKL = 1), inference under
  ``torch.inference_mode()`` for both (as ``acids-ddsp stream``; ddsp_pytorch gains ~3 % from it, ours
  ~10 %); each round sends every case to both, in alternating order, so load changes hit both. Per
  call: CPU time (``time.process_time``) and wall. x real time = audio seconds / CPU seconds (the median
  over calls); the ratio is ours / baseline of those.
  Streaming: one call per 1024-sample host buffer (2 frames at 48 kHz / block 512, 8 at 16 kHz / block 128),
  fed through the 10 s of controls, state carried: eager (``realtime_forward`` / our ``set_streaming(True)``
  model) and TorchScript (its exported ``.ts`` / our nn~ ``ScriptedDDSP``). Latency: compute ms per call
  (median, p95; max in the JSON); the algorithmic latency of both is the host buffer (neither model has
  look-ahead).
* **bfloat16** (``-bf16`` cases): ours with ``DDSP.set_precision("bf16")`` / ``ScriptedDDSP(...,
  precision="bf16")`` (the opt-in nn~ path: decoder Linear and GRU weights in bfloat16, activations and
  synthesis float32; needs a CPU with bfloat16 arithmetic); the baseline is the same float32 model as in
  the plain cases (it has no such option). ``-int8`` cases: the same with ``set_precision("int8")``
  (int8 weights per output channel, inputs quantized per frame, ``torch._int_mm``), offline too.
* **Training step**: the same batch (16 x 4 s violin crops at 16 kHz, its shipped BATCH and signal_length):
  the baseline's train.py step (forward, its multiscale_fft scales 4096..128 lin+log, Adam 1e-3, no clip)
  with its own functions, ours ``acids_ddsp.train.train_step`` (its loss: 2048..64 lin+log, Adam +
  decay, grad clip 3).
* **Peak memory**: a fresh process per (model, case) that builds the model, runs the case once after one
  warm-up call; peak = ``ru_maxrss`` of that process; "+run" = peak minus the RSS after building.

Results: ``bench-out/ddsp-speed/<time>/results.{md,json}`` (``latest`` points at the newest).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = REPO / "bench-out" / "ddsp-speed"
VENV = REPO / "bench-out" / "venv-ddsp-pytorch"
BASELINE_DIR = OUT / "ddsp_pytorch"
MIRROR = Path("/work/.mirror/acids-ircam+ddsp_pytorch/repo")
BASELINE_URL = "https://github.com/acids-ircam/ddsp_pytorch"
TORCH_PIN = "torch==2.13.0"
BASELINE_DEPS = ("numpy", "librosa", "einops", "effortless_config", "pyyaml", "soundfile", "tqdm", "scipy")
DATA = Path("/work/shared/data/phrases")
SECONDS = 10.0
HOST_BUFFER = 1024
TRAIN_BATCH, TRAIN_SECONDS = 16, 4.0

# the issue's targets: same-run ratio ours / ddsp_pytorch (and the same cases with ours' opt-in precisions)
TARGETS = {
    case: 3.0
    for case in (
        "offline-16k",
        "offline-16k-int8",
        "stream-48k",
        "stream-48k-ts",
        "stream-48k-bf16",
        "stream-48k-ts-bf16",
        "stream-48k-int8",
        "stream-48k-ts-int8",
        "stream-48k-small-vs-full-ts",
        "stream-48k-small-vs-full-ts-int8",
    )
}

# sizes: "full" = ddsp_pytorch's config.yaml (hidden 512, 100 harmonics, 65 bands) vs our `full` presets;
# "small" = our real-time presets `small` / `small-48k` (0.35 / 0.38 M params) vs ddsp_pytorch with the hidden
# size that gives the nearest parameter count (its MLPs keep 3 layers, its GRU = hidden) and 60 harmonics.
SIZES = {
    "full": {"hidden_size": 512, "n_harmonic": 100, "n_bands": 65},
    "small": {"hidden_size": 152, "n_harmonic": 60, "n_bands": 65},
}

# name -> spec. kind: offline | stream | train. block = baseline block size = our hop. size: SIZES (full).
CASES: dict[str, dict] = {
    "offline-16k": {"kind": "offline", "sr": 16000, "block": 160, "f0": "violin"},
    "offline-16k-low": {"kind": "offline", "sr": 16000, "block": 160, "f0": "low"},
    "offline-16k-decoder": {"kind": "offline", "sr": 16000, "block": 160, "f0": "violin", "part": "decoder"},
    "offline-48k": {"kind": "offline", "sr": 48000, "block": 512, "f0": "violin"},
    "stream-48k": {"kind": "stream", "sr": 48000, "block": 512, "f0": "violin", "path": "eager"},
    "stream-48k-ts": {"kind": "stream", "sr": 48000, "block": 512, "f0": "violin", "path": "ts"},
    "stream-48k-bf16": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "eager",
        "precision": "bf16",
    },
    "stream-48k-ts-bf16": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "ts",
        "precision": "bf16",
    },
    "stream-48k-int8": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "eager",
        "precision": "int8",
    },
    "stream-48k-ts-int8": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "ts",
        "precision": "int8",
    },
    "offline-16k-int8": {"kind": "offline", "sr": 16000, "block": 160, "f0": "violin", "precision": "int8"},
    "offline-16k-decoder-int8": {
        "kind": "offline",
        "sr": 16000,
        "block": 160,
        "f0": "violin",
        "part": "decoder",
        "precision": "int8",
    },
    "stream-48k-low": {"kind": "stream", "sr": 48000, "block": 512, "f0": "low", "path": "eager"},
    "stream-48k-norev": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "eager",
        "reverb": False,
    },
    "stream-16k": {"kind": "stream", "sr": 16000, "block": 128, "f0": "violin", "path": "eager"},
    "offline-16k-small": {"kind": "offline", "sr": 16000, "block": 160, "f0": "violin", "size": "small"},
    "stream-48k-small": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "eager",
        "size": "small",
    },
    # across sizes: ours `small-48k` (the preset the quality benchmark trains and whose targets it meets) vs
    # ddsp_pytorch as it ships (its full config.yaml size and its own realtime TorchScript export)
    "stream-48k-small-vs-full-ts": {
        "kind": "stream",
        "sr": 48000,
        "block": 512,
        "f0": "violin",
        "path": "ts",
        "size": "small",
        "baseline_size": "full",
    },
    "train-16k": {"kind": "train", "sr": 16000, "block": 160, "f0": "violin"},
}
CASES["stream-48k-small-vs-full-ts-int8"] = {**CASES["stream-48k-small-vs-full-ts"], "precision": "int8"}


# ---------------------------------------------------------------------------------------------------------
# set-up (dev venv)


def run_logged(cmd: list[str], log: Path, **kw) -> None:
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(map(str, cmd)) + "\n").encode())
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw)
    if r.returncode:
        raise RuntimeError(f"failed (rc={r.returncode}): {' '.join(map(str, cmd))}; see {log}")


def ensure_baseline_source(git_dir: Path) -> str:
    """ddsp_pytorch's tree in BASELINE_DIR; returns its commit."""
    stamp = BASELINE_DIR / ".bench-commit"
    if stamp.exists():
        return stamp.read_text().strip()
    OUT.mkdir(parents=True, exist_ok=True)
    if git_dir.exists():
        commit = subprocess.run(
            ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        BASELINE_DIR.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(
            ["git", "--git-dir", str(git_dir), "archive", "HEAD"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(BASELINE_DIR)], input=tar.stdout, check=True)
    else:
        r = subprocess.run(["git", "clone", "--depth", "1", BASELINE_URL, str(BASELINE_DIR)])
        if r.returncode:
            raise SystemExit(
                f"cannot get ddsp_pytorch: no git mirror at {git_dir} and `git clone {BASELINE_URL}` failed "
                f"(rc={r.returncode}); pass --baseline-git PATH/TO/ddsp_pytorch/.git"
            )
        commit = subprocess.run(
            ["git", "-C", str(BASELINE_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    stamp.write_text(commit + "\n")
    return commit


def ensure_venv() -> dict[str, str]:
    stamp = VENV / ".bench-installed"
    want = " ".join([TORCH_PIN, *BASELINE_DEPS])
    if not (stamp.exists() and stamp.read_text().splitlines()[0] == want):
        log = VENV.parent / "venv-ddsp-pytorch-install.log"
        print(f"installing the ddsp_pytorch venv {VENV} (log: {log}) ...", file=sys.stderr)
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        cons = VENV / "constraints.txt"
        cons.write_text(TORCH_PIN + "\n")
        pip = [
            str(VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-c",
            str(cons),
        ]
        run_logged([*pip, TORCH_PIN], log)
        run_logged([*pip, *BASELINE_DEPS], log)
        code = (
            "import importlib.metadata as m, json\n"
            "print(json.dumps({n: m.version(n) for n in ['torch', 'numpy', 'librosa', 'einops', "
            "'effortless-config', 'PyYAML']}))\n"
        )
        r = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
        )
        versions = json.loads(r.stdout)
        if not versions["torch"].startswith("2.13.0"):
            raise RuntimeError(f"{VENV} has torch {versions['torch']}, expected 2.13.0")
        stamp.write_text(want + "\n" + json.dumps(versions) + "\n")
    return json.loads(stamp.read_text().splitlines()[1])


CREPE_STUB = (
    "import sys, types\n"
    "_crepe = types.ModuleType('crepe')\n"
    "def _predict(*a, **k):\n"
    "    raise RuntimeError('crepe is stubbed in the ddsp_speed bench (TensorFlow, build-time download)')\n"
    "_crepe.predict = _predict\n"
    "sys.modules['crepe'] = _crepe\n"
)


def ensure_baseline_ts(sr: int, block: int, log: Path) -> Path:
    """Run ddsp_pytorch's own export.py (--realtime true) on an untrained run directory."""
    name = f"bench{sr // 1000}k{block}"
    ts = OUT / "export" / f"ddsp_{name}_pretrained.ts"
    if ts.exists():
        return ts
    run = OUT / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    cfg = {
        "data": {
            "data_location": "/nonexistent",
            "extension": "wav",
            "mean_loudness": 0.0,
            "std_loudness": 1.0,
        },
        "preprocess": {
            "sampling_rate": sr,
            "signal_length": 64000,
            "block_size": block,
            "oneshot": False,
            "out_dir": "./preprocessed/",
        },
        "model": {
            "hidden_size": 512,
            "n_harmonic": 100,
            "n_bands": 65,
            "sampling_rate": sr,
            "block_size": block,
        },
        "train": {"scales": [4096, 2048, 1024, 512, 256, 128], "overlap": 0.75},
    }
    (run / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    py = str(VENV / "bin" / "python")
    code = (
        CREPE_STUB
        + "import torch, json\nfrom ddsp.model import DDSP\ntorch.manual_seed(0)\n"
        + f"cfg = json.load(open({str(run / 'config.yaml')!r}))\n"
        + f"torch.save(DDSP(**cfg['model']).state_dict(), {str(run / 'state.pth')!r})\n"
    )
    run_logged([py, "-c", code], log, cwd=BASELINE_DIR)
    code = (
        CREPE_STUB
        + "import runpy\n"
        + f"sys.argv = ['export.py', '--run', {str(run)!r}, '--realtime', 'true', '--out-dir', "
        + f"{str(OUT / 'export')!r}]\n"
        + "runpy.run_path('export.py', run_name='__main__')\n"
    )
    run_logged([py, "-c", code], log, cwd=BASELINE_DIR)
    if not ts.exists():
        raise RuntimeError(f"ddsp_pytorch export.py did not write {ts}; see {log}")
    return ts


def make_controls(path: Path) -> None:
    """10 s of acids-data features of voiced violin per (rate, block), and the 16 x 4 s training batch."""
    import numpy as np
    import soundfile as sf

    from acids_data.features import compute_features

    arrays = {}
    for sr, block in sorted({(c["sr"], c["block"]) for c in CASES.values()}):
        x, fs = sf.read(DATA / str(sr) / "violin_phrases.flac", dtype="float32")
        assert fs == sr and x.ndim == 1
        head = compute_features(x[None, : 5 * sr], sr, block, ["f0"])
        voiced = np.nonzero(head["f0_confidence"] > 0.5)[0]
        start = int(voiced[0]) * block if voiced.size else 0
        seg = x[start : start + int(SECONDS * sr)]
        feats = compute_features(seg[None], sr, block, ["loudness", "f0"])
        arrays[f"f0_{sr}_{block}"] = feats["f0"]
        arrays[f"ld_{sr}_{block}"] = feats["loudness"]
        if sr == 16000 and block == 160:  # the training batch: 16 crops of 4 s spread over the 63 s phrase
            n = int(TRAIN_SECONDS * sr)
            offsets = np.linspace(0, x.shape[0] - n, TRAIN_BATCH).astype(int) // block * block
            audio = np.stack([x[o : o + n] for o in offsets])
            f = [compute_features(a[None], sr, block, ["loudness", "f0"]) for a in audio]
            arrays["train_audio"] = audio
            arrays["train_f0"] = np.stack([g["f0"] for g in f])
            arrays["train_ld"] = np.stack([g["loudness"] for g in f])
    np.savez(path, **arrays)


# ---------------------------------------------------------------------------------------------------------
# workers (each in its own process and venv)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Worker:
    """Builds one case's model and inputs lazily; ``run(case, n)`` times n calls (after a warm-up)."""

    def __init__(self, tool: str, controls: Path, baseline_ts: str | None) -> None:
        import numpy as np
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        self.np, self.torch = np, torch
        self.tool = tool
        self.data = dict(np.load(controls))
        self.baseline_ts = baseline_ts
        self.built: dict[str, dict] = {}
        if tool == "baseline":
            exec(CREPE_STUB, {})
            sys.path.insert(0, str(BASELINE_DIR))

    # -- inputs
    def controls(self, spec: dict) -> tuple:
        np = self.np
        sr, block = spec["sr"], spec["block"]
        f0 = self.data[f"f0_{sr}_{block}"].astype(np.float32)
        ld = self.data[f"ld_{sr}_{block}"].astype(np.float32)
        if spec["f0"] == "low":
            f0 = np.linspace(60.0, 78.0, f0.shape[0], dtype=np.float32)
        return f0, ld

    def build(self, name: str) -> dict:
        if name in self.built:
            return self.built[name]
        spec = CASES[name]
        torch = self.torch
        torch.manual_seed(0)
        st = self._build_baseline(spec) if self.tool == "baseline" else self._build_ours(spec)
        if "model" in st and "params" not in st:
            st["params"] = int(sum(p.numel() for p in st["model"].parameters()))
        self.built[name] = st
        return st

    def _build_baseline(self, spec: dict) -> dict:
        torch, np = self.torch, self.np
        from ddsp import core
        from ddsp.model import DDSP

        sr, block = spec["sr"], spec["block"]
        size = spec.get("baseline_size", spec.get("size", "full"))
        model = DDSP(**SIZES[size], sampling_rate=sr, block_size=block)
        st: dict = {"model": model, "spec": spec}
        if spec["kind"] == "train":
            audio = torch.from_numpy(self.data["train_audio"])
            ld = self.data["train_ld"]
            ld = (ld - ld.mean()) / ld.std()
            st["batch"] = (
                audio,
                torch.from_numpy(self.data["train_f0"]).unsqueeze(-1),
                torch.from_numpy(ld.astype(np.float32)).unsqueeze(-1),
            )
            st["opt"] = torch.optim.Adam(model.parameters(), lr=1e-3)  # train.py: START_LR, no scheduler
            st["core"] = core
            return st
        model.eval()
        f0, ld = self.controls(spec)
        ld = (ld - ld.mean()) / ld.std()
        p = torch.from_numpy(f0).reshape(1, -1, 1)
        lo = torch.from_numpy(ld.astype(np.float32)).reshape(1, -1, 1)
        if spec["kind"] == "offline":
            st["inputs"] = (p, lo)
            return st
        per = HOST_BUFFER // block
        n = p.shape[1] // per
        if spec.get("path") == "ts":
            if self.baseline_ts is None or not (sr == 48000 and block == 512 and size == "full"):
                raise RuntimeError("baseline TorchScript only for 48 kHz / 512")
            st["ts"] = torch.jit.load(self.baseline_ts).eval()
            # ddsp~ hands audio-rate signals: (1, 1024, 1), decimated inside by [:, ::block]
            st["calls"] = [
                (
                    p[:, i * per : (i + 1) * per].repeat_interleave(block, 1),
                    lo[:, i * per : (i + 1) * per].repeat_interleave(block, 1),
                )
                for i in range(n)
            ]
        else:
            st["calls"] = [(p[:, i * per : (i + 1) * per], lo[:, i * per : (i + 1) * per]) for i in range(n)]
        st["next"] = 0
        return st

    def _build_ours(self, spec: dict) -> dict:
        import dataclasses

        torch = self.torch
        from acids_ddsp.config import preset
        from acids_ddsp.model import DDSP

        sr, block = spec["sr"], spec["block"]
        cfg = preset(spec.get("size", "full") + ("" if sr == 16000 else "-48k"))
        cfg = dataclasses.replace(cfg, sample_rate=sr, hop=block)
        if spec.get("reverb") is False:
            cfg = dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, reverb=False))
        model = DDSP(cfg)
        st: dict = {"model": model, "spec": spec, "cfg": cfg}
        if spec["kind"] == "train":
            from acids_ddsp.losses import from_config
            from acids_ddsp.train import make_optimizer

            st["batch"] = {
                "audio": torch.from_numpy(self.data["train_audio"]).unsqueeze(1),
                "f0": torch.from_numpy(self.data["train_f0"]),
                "loudness": torch.from_numpy(self.data["train_ld"]),
            }
            st["opt"], st["sched"] = make_optimizer(model, cfg)
            st["loss"] = from_config(cfg)
            return st
        model.eval()
        st["params"] = int(sum(p.numel() for p in model.parameters()))  # before int8 weights become buffers
        precision = spec.get("precision", "fp32")  # ours only: the baseline runs as shipped (float32)
        f0, ld = self.controls(spec)
        f = torch.from_numpy(f0).reshape(1, -1)
        lo = torch.from_numpy(ld).reshape(1, -1)
        if spec["kind"] == "offline":
            model.set_precision(precision)
            st["inputs"] = (f, lo)
            return st
        per = HOST_BUFFER // block
        n = f.shape[1] // per
        if spec.get("path") == "ts":
            from acids_ddsp.export import ScriptedDDSP, script

            st["ts"] = script(ScriptedDDSP(model, streaming=True, precision=precision))
            x = torch.stack([f, lo], dim=1)  # (1, 2, F): what nn~ hands at in_ratio = hop
            st["calls"] = [(x[:, :, i * per : (i + 1) * per],) for i in range(n)]
        else:
            model.set_precision(precision)
            model.set_streaming(True)
            st["calls"] = [(f[:, i * per : (i + 1) * per], lo[:, i * per : (i + 1) * per]) for i in range(n)]
        st["next"] = 0
        return st

    # -- one call
    def call(self, st: dict) -> float:
        """Run one unit of the case; returns the audio seconds it produced."""
        torch = self.torch
        spec = st["spec"]
        kind = spec["kind"]
        if kind == "train":
            return self._train_step(st)
        with torch.inference_mode():  # what `acids-ddsp stream` uses (ddsp_pytorch gains ~3 % from it too)
            if kind == "offline":
                if spec.get("part") == "decoder":
                    self._decoder(st)
                else:
                    st["model"](*st["inputs"])
                return st["inputs"][0].shape[1] * spec["block"] / spec["sr"]
            args = st["calls"][st["next"]]
            st["next"] = (st["next"] + 1) % len(st["calls"])
            if "ts" in st:
                st["ts"](*args)
            elif self.tool == "baseline":
                st["model"].realtime_forward(*args)
            else:
                st["model"](*args)
            return HOST_BUFFER / spec["sr"]

    def _decoder(self, st: dict) -> None:
        """The control network alone: f0/loudness frames -> synthesizer parameters."""
        m = st["model"]
        if self.tool == "baseline":  # the first lines of its DDSP.forward, with its own modules
            torch = self.torch
            p, lo = st["inputs"]
            hidden = torch.cat([m.in_mlps[0](p), m.in_mlps[1](lo)], -1)
            hidden = m.out_mlp(torch.cat([m.gru(hidden)[0], p, lo], -1))
            m.proj_matrices[0](hidden), m.proj_matrices[1](hidden)
        else:
            m.controls(*st["inputs"])

    def _train_step(self, st: dict) -> float:
        spec = st["spec"]
        if self.tool == "baseline":
            core, model, opt = st["core"], st["model"], st["opt"]
            s, p, lo = st["batch"]
            model.train()
            y = model(p, lo).squeeze(-1)
            scales, overlap = [4096, 2048, 1024, 512, 256, 128], 0.75
            ori, rec = core.multiscale_fft(s, scales, overlap), core.multiscale_fft(y, scales, overlap)
            loss = 0
            for s_x, s_y in zip(ori, rec, strict=True):
                loss = (
                    loss + (s_x - s_y).abs().mean() + (core.safe_log(s_x) - core.safe_log(s_y)).abs().mean()
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            audio = s
        else:
            from acids_ddsp.train import train_step

            train_step(
                st["model"], st["loss"], st["opt"], st["sched"], st["batch"], st["cfg"].train.grad_clip
            )
            audio = st["batch"]["audio"]
        return audio.shape[0] * audio.shape[-1] / spec["sr"]

    def run(self, name: str, n: int, warmup: int) -> dict:
        st = self.build(name)
        if not st.get("warm"):
            for _ in range(warmup):
                self.call(st)
            st["warm"] = True
        cpu, wall = [], []
        audio = 0.0
        for _ in range(n):
            c0, w0 = time.process_time(), time.perf_counter()
            audio = self.call(st)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return {"cpu": cpu, "wall": wall, "audio_s": audio, "params": st["params"]}

    def memory(self, name: str, warmup: int) -> dict:
        import gc

        st = self.build(name)
        gc.collect()
        rss_built = _rss()
        for _ in range(max(1, warmup)):
            self.call(st)
        n = len(st["calls"]) if "calls" in st else 1
        for _ in range(n):
            self.call(st)
        return {"maxrss": _maxrss(), "rss_built": rss_built, "params": st["params"]}


def worker_main(args: argparse.Namespace) -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the libraries print goes to stderr; the protocol owns the real stdout
    sys.stdout = sys.stderr
    w = Worker(args.worker, Path(args.controls), args.baseline_ts)
    if args.memory:
        out.write(json.dumps(w.memory(args.memory, args.warmup)) + "\n")
        return 0
    out.write(json.dumps({"ready": True, "rss": _rss()}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("quit"):
            break
        try:
            res = w.run(msg["case"], msg["n"], msg["warmup"])
        except Exception as e:  # report, keep serving
            import traceback

            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(res) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------------------
# orchestration (dev venv)


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = open(log, "ab")
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, bufsize=1
        )
        self.ask(None)

    def ask(self, msg: dict | None) -> dict:
        if msg is not None:
            self.p.stdin.write(json.dumps(msg) + "\n")
            self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.p.stdin.write(json.dumps({"quit": True}) + "\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)
        self.log.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summarise(calls: list[dict]) -> dict:
    cpu = [c for r in calls for c in r["cpu"]]
    wall = [c for r in calls for c in r["wall"]]
    audio = calls[0]["audio_s"]
    return {
        "n": len(cpu),
        "audio_s": audio,
        "cpu_med": statistics.median(cpu),
        "cpu_min": min(cpu),
        "cpu_p95": pct(cpu, 0.95),
        "cpu_max": max(cpu),
        "wall_med": statistics.median(wall),
        "wall_p95": pct(wall, 0.95),
        "xrt_cpu": audio / statistics.median(cpu),
        "xrt_wall": audio / statistics.median(wall),
        "params": calls[0]["params"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (order alternates)")
    ap.add_argument("--offline-calls", type=int, default=3, help="10 s renders per round")
    ap.add_argument("--stream-calls", type=int, default=0, help="calls per round (0: the whole 10 s)")
    ap.add_argument("--train-steps", type=int, default=1, help="steps per round (after 1 warm-up step)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--baseline-git", default=str(MIRROR), help="git dir of ddsp_pytorch (else cloned)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--controls", help=argparse.SUPPRESS)
    ap.add_argument("--baseline-ts", help=argparse.SUPPRESS)
    ap.add_argument("--memory", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)

    cases = [c for c in args.cases.split(",") if c]
    if args.no_train:
        cases = [c for c in cases if CASES[c]["kind"] != "train"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = OUT / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "setup.log"
    commit = ensure_baseline_source(Path(args.baseline_git))
    versions = ensure_venv()
    ts = ensure_baseline_ts(48000, 512, log) if any(CASES[c].get("path") == "ts" for c in cases) else None
    controls = OUT / "controls.npz"
    if not controls.exists():
        make_controls(controls)
    import torch

    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    py = {"ours": sys.executable, "baseline": str(VENV / "bin" / "python")}

    def wcmd(tool: str) -> list[str]:
        cmd = [py[tool], str(Path(__file__).resolve()), "--worker", tool, "--controls", str(controls)]
        return cmd + (["--baseline-ts", str(ts)] if ts else [])

    print(
        f"ddsp_pytorch {commit[:7]}, venv {versions}; cases {cases}; load {os.getloadavg()}", file=sys.stderr
    )
    procs = {t: Proc(wcmd(t), env, run_dir / f"worker-{t}.log") for t in ("ours", "baseline")}
    raw: dict[str, dict[str, list]] = {c: {"ours": [], "baseline": []} for c in cases}
    loads = []
    t0 = time.time()
    try:
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for ci, case in enumerate(cases):
                kind = CASES[case]["kind"]
                n = {"offline": args.offline_calls, "train": args.train_steps}.get(kind)
                if kind == "stream":
                    sr = CASES[case]["sr"]
                    n = args.stream_calls or int(SECONDS * sr) // HOST_BUFFER
                warm = {"offline": 1, "stream": 20, "train": 1}[kind]
                order = ["ours", "baseline"] if (r + ci) % 2 == 0 else ["baseline", "ours"]
                for tool in order:
                    res = procs[tool].ask({"case": case, "n": n, "warmup": warm})
                    if "error" in res:
                        raise RuntimeError(f"{tool} {case}: {res['error']}")
                    raw[case][tool].append(res)
                    print(
                        f"  round {r + 1} {case:18s} {tool:8s} "
                        f"median CPU {statistics.median(res['cpu']) * 1e3:9.2f} ms"
                        f" ({time.time() - t0:.0f} s)",
                        file=sys.stderr,
                    )
    finally:
        for p in procs.values():
            p.close()

    summary: dict[str, dict] = {}
    for case in cases:
        summary[case] = {t: summarise(raw[case][t]) for t in ("ours", "baseline")}
        # ratio of each round's medians (ours x RT / baseline x RT = baseline CPU / ours CPU)
        summary[case]["round_ratios"] = [
            statistics.median(b["cpu"]) / statistics.median(o["cpu"])
            for o, b in zip(raw[case]["ours"], raw[case]["baseline"], strict=True)
        ]
    if not args.no_memory:
        for case in cases:
            for tool in ("baseline", "ours"):
                warm = {"offline": 1, "stream": 20, "train": 1}[CASES[case]["kind"]]
                r = subprocess.run(
                    [*wcmd(tool), "--memory", case, "--warmup", str(warm)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if r.returncode:
                    raise RuntimeError(f"memory run {tool} {case} failed:\n{r.stderr[-3000:]}")
                summary[case][tool]["memory"] = json.loads(r.stdout.strip().splitlines()[-1])
                print(
                    f"  memory {case:18s} {tool:8s} "
                    f"peak {summary[case][tool]['memory']['maxrss'] / 2**20:.0f} MiB",
                    file=sys.stderr,
                )

    md = report(summary, cases, commit, versions, loads, torch.__version__)
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "commit": commit,
                "versions": versions,
                "loads": loads,
                "cases": {c: CASES[c] for c in cases},
                "summary": summary,
                "raw": raw,
            },
            indent=1,
        )
    )
    latest = OUT / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)
    print(md)
    return 0


DESCRIBE = {
    "offline-16k": "offline 10 s, 16 kHz, block 160, violin f0",
    "offline-16k-low": "offline 10 s, 16 kHz, block 160, f0 60-78 Hz (all harmonics)",
    "offline-16k-decoder": "offline 10 s, 16 kHz, block 160: the decoder alone (f0/loudness -> controls)",
    "offline-48k": "offline 10 s, 48 kHz, block 512, violin f0",
    "stream-48k": "stream 1024-sample calls, 48 kHz, block 512, eager",
    "stream-48k-ts": "stream 1024-sample calls, 48 kHz, TorchScript (ddsp~ .ts / nn~ ScriptedDDSP)",
    "stream-48k-bf16": "stream 1024, 48 kHz, eager, ours with bfloat16 decoder weights (opt-in)",
    "stream-48k-ts-bf16": "stream 1024, 48 kHz, TorchScript, ours with bfloat16 decoder weights (opt-in)",
    "stream-48k-int8": "stream 1024, 48 kHz, eager, ours with int8 decoder weights (opt-in)",
    "stream-48k-ts-int8": "stream 1024, 48 kHz, TorchScript, ours with int8 decoder weights (opt-in)",
    "offline-16k-int8": "offline 10 s, 16 kHz, block 160, ours with int8 decoder weights (opt-in)",
    "offline-16k-decoder-int8": "offline 10 s, 16 kHz: the decoder alone, ours with int8 weights (opt-in)",
    "stream-48k-low": "stream 1024, 48 kHz, eager, f0 60-78 Hz (all harmonics)",
    "stream-48k-norev": "stream 1024, 48 kHz, eager, ours without reverb (as the baseline's realtime path)",
    "stream-16k": "stream 1024-sample calls, 16 kHz, block 128, eager",
    "train-16k": "training step, 16 x 4 s at 16 kHz, block 160",
    "offline-16k-small": "small sizes: offline 10 s, 16 kHz, block 160",
    "stream-48k-small": "small sizes: stream 1024-sample calls, 48 kHz, block 512, eager",
    "stream-48k-small-vs-full-ts": "across sizes: ours `small-48k` vs ddsp_pytorch as shipped (full), stream "
    "1024 @ 48 kHz, TorchScript",
    "stream-48k-small-vs-full-ts-int8": "across sizes: the same, ours with int8 decoder weights (opt-in)",
}


def report(summary: dict, cases: list[str], commit: str, versions: dict, loads: list, torch_v: str) -> str:
    lines = [
        f"ddsp_pytorch {commit[:7]} (venv torch {versions.get('torch')}) vs acids-ddsp (torch {torch_v}); "
        f"1 thread each, CPU time, interleaved; "
        f"load average per round {', '.join(f'{x:.1f}' for x in loads)}",
        "",
        "| case | baseline x RT (CPU) | ours x RT (CPU) | ratio ours/baseline | per round | target | "
        "ms per call baseline / ours (median, p95) | params baseline / ours | "
        "peak RSS baseline / ours (+run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        b, o = summary[case]["baseline"], summary[case]["ours"]
        ratio = o["xrt_cpu"] / b["xrt_cpu"]
        rounds = summary[case]["round_ratios"]
        target = TARGETS.get(case)
        verdict = f"≥ {target:.0f}× {'met' if ratio >= target else 'NOT met'}" if target else ""
        kind = CASES[case]["kind"]
        if kind == "stream":
            ms = (
                f"{b['cpu_med'] * 1e3:.2f}, {b['cpu_p95'] * 1e3:.2f} / "
                f"{o['cpu_med'] * 1e3:.2f}, {o['cpu_p95'] * 1e3:.2f}"
            )
        else:
            ms = f"{b['cpu_med'] * 1e3:.0f} / {o['cpu_med'] * 1e3:.0f}"
        mem = ""
        if "memory" in b:
            mb, mo = b["memory"], o["memory"]
            mem = (
                f"{mb['maxrss'] / 2**20:.0f} (+{(mb['maxrss'] - mb['rss_built']) / 2**20:.0f}) / "
                f"{mo['maxrss'] / 2**20:.0f} (+{(mo['maxrss'] - mo['rss_built']) / 2**20:.0f}) MiB"
            )
        lines.append(
            f"| {DESCRIBE[case]} | {b['xrt_cpu']:.1f}× | {o['xrt_cpu']:.1f}× | **{ratio:.2f}×** | "
            f"{min(rounds):.2f}–{max(rounds):.2f}× | {verdict} | {ms} | "
            f"{b['params']:,} / {o['params']:,} | {mem} |"
        )
    extra = []
    if "offline-16k" in summary and "offline-16k-decoder" in summary:
        t = {
            k: summary["offline-16k"][k]["cpu_med"] - summary["offline-16k-decoder"][k]["cpu_med"]
            for k in ("baseline", "ours")
        }
        bound = (
            summary["offline-16k"]["baseline"]["cpu_med"] / summary["offline-16k-decoder"]["ours"]["cpu_med"]
        )
        extra.append(
            f"- offline 16 kHz, synthesis alone (forward − decoder, median CPU per 10 s): baseline "
            f"{t['baseline'] * 1e3:.0f} ms, ours {t['ours'] * 1e3:.0f} ms, "
            f"ratio {t['baseline'] / t['ours']:.1f}×; "
            f"if ours took no time at all beyond its decoder, the forward ratio would be "
            f"{bound:.2f}×"
        )
    if "stream-48k" in summary and "stream-48k-small" in summary:
        b, o = summary["stream-48k"]["baseline"], summary["stream-48k-small"]["ours"]
        extra.append(
            f"- across sizes: ours `small-48k` ({o['params']:,} params) streaming {o['xrt_cpu']:.1f}× "
            f"vs ddsp_pytorch "
            f"at its 48 kHz / 512 size ({b['params']:,} params) {b['xrt_cpu']:.1f}×: ratio "
            f"**{o['xrt_cpu'] / b['xrt_cpu']:.2f}×** (target ≥ 3× if the sizes may differ)"
        )
    if extra:
        lines += ["", *extra]
    lines += [
        "",
        "x RT = audio seconds / median CPU seconds per call (training: audio seconds of the batch per step). "
        "Wall-clock x RT (median): "
        + "; ".join(
            f"{c} {summary[c]['baseline']['xrt_wall']:.1f}× / {summary[c]['ours']['xrt_wall']:.1f}×"
            for c in cases
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
