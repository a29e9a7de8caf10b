"""f0 extraction alone: ``acids_data.features.f0`` over a corpus, CPU time of the calls only.

Usage: python f0_alone.py --list FILES.txt [--sample-rate 44100] [--hop 512] [--json OUT]

The audio is decoded and resampled to the dataset rate (mono) first, outside the timed region; then each
file goes through ``f0(x, sample_rate, hop)`` (which includes its own resampling to the tracker's 16 kHz).
Timed with ``time.process_time`` (CPU of all this process's threads), after one warm-up call that creates
the ONNX session. Run it with OMP_NUM_THREADS=1 for the one-core figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", type=Path, required=True, help="text file, one audio path per line")
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--hop", type=int, default=512, help="feature hop in samples (acids-preprocess default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    import soundfile as sf
    import soxr

    try:
        from acids_data.features import f0
    except ImportError as e:
        print(f"acids_data.features.f0 not importable: {e}", file=sys.stderr)
        return 69

    signals = []
    for p in [p for p in args.list.read_text().splitlines() if p]:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = x.mean(axis=1, dtype=np.float32)
        if sr != args.sample_rate:
            x = soxr.resample(x, sr, args.sample_rate, quality="HQ")
        signals.append(np.ascontiguousarray(x[None, :]))  # (1, T)
    seconds = sum(s.shape[1] for s in signals) / args.sample_rate

    c0 = time.process_time()
    f0(signals[0][:, : args.sample_rate], args.sample_rate, args.hop)  # warm-up: tracker session
    warmup = time.process_time() - c0
    c0, w0 = time.process_time(), time.perf_counter()
    frames = 0
    for s in signals:
        hz, _conf = f0(s, args.sample_rate, args.hop)
        frames += len(hz)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rec = {
        "audio_s": round(seconds, 3),
        "files": len(signals),
        "frames": frames,
        "warmup_cpu_s": round(warmup, 4),
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "xrt_per_cpu_s": round(seconds / cpu, 1) if cpu else None,
        "xrt_wall": round(seconds / wall, 1) if wall else None,
    }
    if args.json:
        args.json.write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
