"""Physical floor of preprocessing: libsndfile decode + soxr HQ resample + channel map, result discarded.

Usage: python decode_resample.py --list FILES.txt [--sample-rate 44100] [--channels 1] [--json OUT]

One process, one file at a time, the whole file in memory. Mono output is the mean of the input channels
(what acids-preprocess does; RAVE takes the left channel). It also writes the resampled length of every file,
from which the bench derives the exact chunk count a soxr-based tool should produce.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    t_start = time.process_time()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", type=Path, required=True, help="text file, one audio path per line")
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--quality", default="HQ", help="soxr quality (QQ, LQ, MQ, HQ, VHQ)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    import soundfile as sf
    import soxr

    t_imports = time.process_time() - t_start
    paths = [p for p in args.list.read_text().splitlines() if p]
    c0, w0 = time.process_time(), time.perf_counter()
    out = []
    for p in paths:
        x, sr = sf.read(p, dtype="float32", always_2d=True)  # (T, C)
        if args.channels == 1:
            x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
        else:  # first C channels, repeated when the input has fewer
            x = x[:, np.arange(args.channels) % x.shape[1]]
        if sr != args.sample_rate:
            x = soxr.resample(x, sr, args.sample_rate, quality=args.quality)
        out.append({"path": p, "sr": sr, "out_len": int(x.shape[0])})
        del x
    rec = {
        "files": out,
        "imports_cpu_s": round(t_imports, 4),
        "loop_cpu_s": round(time.process_time() - c0, 4),
        "loop_wall_s": round(time.perf_counter() - w0, 4),
    }
    if args.json:
        args.json.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
