"""Shared helpers of the acids-data benchmarks: test corpus, baseline venv, measured subprocess runs.

Imported by the bench scripts of this folder (they run as scripts, so this module sits on sys.path[0]).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BENCH_OUT = REPO / "bench-out"
DATA_ROOT = Path("/work/shared/data")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aif", ".aiff", ".aac")

# ---------------------------------------------------------------------------------------------------------
# corpus

CORPUS_VERSION = 1
RATES = (22050, 44100, 48000)
FORMATS = ("wav", "flac", "mp3")
MP3_COMPRESSION = 0.4  # libsndfile CBR: 0.0 = 320 kb/s, 0.4 ~ 190 kb/s (the reference used 192 kb/s)


@dataclass
class Corpus:
    root: Path
    files: list[dict[str, Any]] = field(default_factory=list)  # {path (rel), sr, channels, frames, seconds}

    @property
    def seconds(self) -> float:
        return sum(f["seconds"] for f in self.files)

    def paths(self) -> list[Path]:
        return [self.root / f["path"] for f in self.files]


def _segments(data_root: Path) -> list[tuple[str, list[Path], tuple[float, float] | None]]:
    """(name, source files to concatenate, optional (start, end) fraction) of every corpus file."""
    segs: list[tuple[str, list[Path], tuple[float, float] | None]] = []
    for p in sorted((data_root / "phrases" / "48000").glob("*.flac")):
        stem = p.stem.removesuffix("_phrases")
        segs.append((f"phrase_{stem}_a", [p], (0.0, 0.5)))
        segs.append((f"phrase_{stem}_b", [p], (0.5, 1.0)))
    for p in sorted((data_root / "drums" / "grooves" / "48000").glob("*.flac")):
        segs.append((f"{p.stem}_a", [p], (0.0, 0.5)))
        segs.append((f"{p.stem}_b", [p], (0.5, 1.0)))
    notes = sorted((data_root / "notes" / "48000").glob("*.flac"))[::11][:54]
    for g in range(6):  # 6 files of 8 concatenated 4 s notes
        segs.append((f"notes_{g}", notes[g * 8 : g * 8 + 8], None))
    drums = sorted((data_root / "drums" / "gm" / "48000").glob("*.flac"))[::3][:46]
    for g in range(4):  # 4 files of 10 concatenated 3 s one-shots
        segs.append((f"drums_{g}", drums[g * 10 : g * 10 + 10], None))
    # short single files (about one chunk long): the "too short" edge that tools treat differently
    for i, p in enumerate(notes[48:51]):
        segs.append((f"short_note_{i}", [p], None))
    for i, p in enumerate(drums[40:43]):
        segs.append((f"short_drum_{i}", [p], None))
    return segs


def build_corpus(out: Path, data_root: Path = DATA_ROOT, variant: int = 0) -> Corpus:
    """Deterministic mixed corpus (3 rates x mono/stereo x wav/flac/mp3) from the shared data, cached.

    ``variant`` k > 0 scales the audio by ``1 - 0.002 k`` (about -0.02 dB per step): the same decoding work,
    different bytes (acids-preprocess skips files whose content hash it has already seen, so copies of the
    corpus must differ). Rebuilt only when ``corpus.json`` is missing or from another version/variant.
    """
    import numpy as np
    import soundfile as sf
    import soxr

    index = out / "corpus.json"
    if index.exists():
        meta = json.loads(index.read_text())
        if meta.get("version") == CORPUS_VERSION and meta.get("variant", 0) == variant:
            return Corpus(out, meta["files"])
    segs = _segments(data_root)
    if not segs:
        raise FileNotFoundError(f"no source audio under {data_root}")
    combos = [(fmt, sr, ch) for fmt in FORMATS for sr in RATES for ch in (1, 2)]
    tmp = Path(tempfile.mkdtemp(prefix=".corpus-", dir=out.parent))
    files = []
    for i, (name, srcs, frac) in enumerate(segs):
        fmt, sr, ch = combos[(i * 7) % len(combos)]  # 7 is prime to 18: all combos in the first 18 files
        parts = []
        for s in srcs:
            x, sr0 = sf.read(s, dtype="float32", always_2d=True)
            parts.append(x[:, 0])
        x = np.concatenate(parts)
        if frac is not None:
            x = x[int(frac[0] * len(x)) : int(frac[1] * len(x))]
        if sr != sr0:
            x = soxr.resample(x, sr0, sr, quality="VHQ").astype(np.float32)
        if variant:
            x = x * np.float32(1.0 - 0.002 * variant)
        if ch == 2:  # a plausible stereo image: right = attenuated copy 5 ms late
            d = int(0.005 * sr)
            right = np.concatenate([np.zeros(d, np.float32), 0.8 * x[:-d]])
            x = np.stack([x, right], axis=1)
        rel = Path(f"sr{sr}") / f"{name}_{'s' if ch == 2 else 'm'}.{fmt}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        if fmt == "mp3":
            sf.write(
                tmp / rel,
                x,
                sr,
                format="MP3",
                subtype="MPEG_LAYER_III",
                compression_level=MP3_COMPRESSION,
                bitrate_mode="CONSTANT",
            )
        else:
            sf.write(tmp / rel, x, sr, subtype="PCM_16")
        info = sf.info(tmp / rel)
        files.append(
            {
                "path": str(rel),
                "sr": info.samplerate,
                "channels": info.channels,
                "frames": info.frames,
                "seconds": info.frames / info.samplerate,
            }
        )
    meta = {
        "version": CORPUS_VERSION,
        "source": str(data_root),
        "files": files,
        "seconds": sum(f["seconds"] for f in files),
    }
    (tmp / "corpus.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return Corpus(out, files)


def scan_corpus(root: Path) -> Corpus:
    """A user-given corpus: every audio file below ``root`` (durations from libsndfile headers)."""
    import soundfile as sf

    files = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_EXTS or not p.is_file():
            continue
        try:
            info = sf.info(p)
        except Exception as e:  # unreadable by libsndfile: keep it out of the audio total, say so
            print(f"warning: {p}: {e}", file=sys.stderr)
            continue
        files.append(
            {
                "path": str(p.relative_to(root)),
                "sr": info.samplerate,
                "channels": info.channels,
                "frames": info.frames,
                "seconds": info.frames / info.samplerate,
            }
        )
    return Corpus(root, files)


def repeat_corpus(base: Corpus, k: int, out: Path, data_root: Path | None = None) -> Corpus:
    """``k`` copies of ``base`` under ``out/copy{j}/``: the steady-state set (like the reference's 8x set).

    copy0 is hard links to ``base``. The others must have different bytes, because acids-preprocess skips a
    file whose sha256 it has already processed (hard-linked copies would be skipped): for the built-in
    corpus (``data_root`` given: its sources) they are :func:`build_corpus` variants (gain 1 - 0.002 j, same
    formats and decoding work); otherwise hard links, which only suits tools that do not deduplicate.
    """
    index = out / "corpus.json"
    builtin = data_root is not None
    key = hashlib.sha256(
        json.dumps([str(base.root), base.files, k, builtin, CORPUS_VERSION]).encode()
    ).hexdigest()
    if index.exists() and json.loads(index.read_text()).get("key") == key[:16]:
        return Corpus(out, json.loads(index.read_text())["files"])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = []
    for j in range(k):
        if j == 0 or not builtin:
            for f in base.files:
                rel = Path(f"copy{j}") / f["path"]
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(base.root / f["path"], out / rel)
                files.append({**f, "path": str(rel)})
        else:
            print(f"building corpus variant {j} ...", file=sys.stderr)
            v = build_corpus(out / f"copy{j}", data_root, variant=j)
            files += [{**f, "path": str(Path(f"copy{j}") / f["path"])} for f in v.files]
    index.write_text(json.dumps({"key": key[:16], "distinct_copies": builtin, "files": files}, indent=1))
    return Corpus(out, files)


# ---------------------------------------------------------------------------------------------------------
# the official RAVE in its own venv

RAVE_SPEC = "acids-rave==2.3.1"
UDLS_SPEC = "udls==1.1.4"
TORCH_PIN = "torch==2.13.0"
# What `rave preprocess` imports: scripts/preprocess.py (lmdb, numpy, torch, yaml, absl, tqdm,
# udls.generated) and udls/__init__.py, which imports every udls module (flask + requests in serve.py,
# librosa + scipy in simple_dataset.py, protobuf for the generated AudioExample).
RAVE_PREPROCESS_DEPS = (
    "absl-py",
    "pyyaml",
    "tqdm",
    "lmdb",
    "protobuf",
    "flask",
    "requests",
    "librosa",
    "scipy",
    "numpy",
)


def _pip(venv: Path, *args: str, log: Path) -> None:
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *args]
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(cmd) + "\n").encode())
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"pip failed (rc={r.returncode}): {' '.join(args)}; see {log}")


def ensure_rave_venv(venv: Path, *, quiet: bool = False) -> dict[str, str]:
    """Install acids-rave 2.3.1 for `rave preprocess` into ``venv`` (idempotent). Returns package versions.

    torch is pinned to 2.13.0 with a constraints file on every pip call, so pip can never replace the local
    CPU wheel with another (CUDA) torch. acids-rave and udls go in ``--no-deps`` (acids-rave pins
    pytorch-lightning==1.9.0, scipy==1.10.0 and wants torchaudio, which does not work with torch 2.13 CPU);
    then just what its preprocess imports.
    """
    stamp = venv / ".bench-installed"
    want = " ".join([TORCH_PIN, RAVE_SPEC, UDLS_SPEC, *RAVE_PREPROCESS_DEPS])
    if not (stamp.exists() and stamp.read_text().splitlines()[0] == want):
        log = venv.parent / f"{venv.name}-install.log"
        if not quiet:
            print(f"installing {RAVE_SPEC} into {venv} (log: {log}) ...", file=sys.stderr)
        t0 = time.time()
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cons = venv / "constraints.txt"
        cons.write_text(TORCH_PIN + "\n")
        _pip(venv, "-c", str(cons), TORCH_PIN, log=log)
        _pip(venv, "-c", str(cons), "--no-deps", RAVE_SPEC, UDLS_SPEC, log=log)
        _pip(venv, "-c", str(cons), *RAVE_PREPROCESS_DEPS, log=log)
        versions = rave_versions(venv)
        if not versions.get("torch", "").startswith("2.13.0"):
            raise RuntimeError(f"rave venv has torch {versions.get('torch')}, expected 2.13.0")
        # the import chain of `rave preprocess`, checked once
        subprocess.run([str(venv / "bin" / "python"), "-c", "import scripts.preprocess"], check=True)
        stamp.write_text(want + "\n" + json.dumps(versions) + "\n")
        if not quiet:
            print(f"rave venv ready in {time.time() - t0:.0f} s: {versions}", file=sys.stderr)
    return json.loads(stamp.read_text().splitlines()[1])


def rave_versions(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "names = ['acids-rave', 'udls', 'torch', 'numpy', 'lmdb', 'protobuf', 'librosa', 'absl-py']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def check_ffmpeg() -> str | None:
    """None if ffmpeg + ffprobe are on PATH, else the explanation."""
    missing = [b for b in ("ffmpeg", "ffprobe") if shutil.which(b) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not on PATH. `rave preprocess` decodes with an ffmpeg subprocess per file "
        "and probes channels with ffprobe; without them its workers fail and the main process waits forever "
        "(RAVE #318, #260). Install it: `apt-get install -y ffmpeg` (Debian 12 gives ffmpeg 5.1), "
        "or run with --skip-rave."
    )


def ffmpeg_version() -> str:
    try:
        r = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True)
        return r.stdout.splitlines()[0]
    except (OSError, IndexError):
        return "none"


RAVE_COUNT = r"""
import json, sys, lmdb
from udls.generated import AudioExample
env = lmdb.open(sys.argv[1], readonly=True, lock=False)
n = env.stat()["entries"]
shape = recorded = None
with env.begin() as txn:
    v = txn.get(b"00000000")
    if v is not None:
        buf = AudioExample.FromString(v).buffers["waveform"]
        # RAVE 2.3.1 stores shape = (C, n_bytes / C): the second number is in bytes, not samples
        shape = [buf.shape[0], len(buf.data) // 2 // buf.shape[0]]
        recorded = list(buf.shape)
print(json.dumps({"chunks": n, "shape": shape, "recorded_shape": recorded}))
"""


def rave_count(venv: Path, db: Path) -> dict[str, Any]:
    """Number of chunks in a `rave preprocess` LMDB and the (C, L) shape of its first one."""
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", RAVE_COUNT, str(db)], capture_output=True, text=True
    )
    if r.returncode:
        return {"chunks": None, "shape": None, "error": r.stderr.strip().splitlines()[-1:]}
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------------------
# measured runs


def measured(
    cmd: list[str], workdir: Path, tag: str, *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` under measure.py (fresh wrapper: per-run CPU of the whole tree and peak memory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    jpath, out, err = workdir / f"{tag}.measure.json", workdir / f"{tag}.stdout", workdir / f"{tag}.stderr"
    wrapper = [
        sys.executable,
        str(HERE / "measure.py"),
        "--json",
        str(jpath),
        "--stdout",
        str(out),
        "--stderr",
        str(err),
        "--timeout",
        str(timeout),
        "--",
    ]
    subprocess.run(wrapper + cmd, check=True, env=env)
    rec = json.loads(jpath.read_text())
    rec["stdout_path"], rec["stderr_path"] = str(out), str(err)
    return rec


def du_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_blocks * 512
    return total


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
