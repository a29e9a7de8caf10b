"""The allocator setting of acids-rave (``acids_rave.runtime.keep_freed_memory``): on / off, alternated.

    .venv/bin/python tools/bench/rave_malloc.py [--pairs 6] [--tiles 1,6] [--train-pairs 4]

Each measurement is a fresh process of ``rave_bench.py worker`` (ours, v2, 1 thread, CPU clock), with
the setting (as the ``acids-rave`` command runs) and without it (``--system-malloc``), alternated pair by
pair: offline encode + decode of the bench's 10 s of violin audio repeated ``--tiles`` times (the first
call, and the best of the next three), and training steps (batch 4 x 65536: the two warm-up steps, and
the median of four after them). Prints medians over the pairs and the ratios; results in
bench-out/rave-bench/results-malloc-ab.json. The audio comes from ``rave_bench.py`` (run it once first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rave_bench  # noqa: E402


def worker(task: str, keep: bool, extra: list[str]) -> dict:
    cmd = [str(rave_bench.OURS_PY), str(HERE / "rave_bench.py"), "worker", task, "--config", "v2"]
    cmd += ["--threads", "1", "--audio", str(rave_bench.AUDIO), "--clock", "cpu", *extra]
    if not keep:
        cmd.append("--system-malloc")
    env = rave_bench._env(1)  # one thread; no ACIDS_MALLOC or glibc MALLOC_* from the caller
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6, help="offline pairs per length")
    ap.add_argument("--tiles", default="1,6", help="offline lengths, in repeats of the 10 s")
    ap.add_argument("--train-pairs", type=int, default=4)
    a = ap.parse_args()
    if not rave_bench.AUDIO.is_file():
        raise SystemExit(f"{rave_bench.AUDIO} missing: run tools/bench/rave_bench.py once first")
    res: dict = {}
    for tile in [int(t) for t in a.tiles.split(",")]:
        key = f"offline-{10 * tile}s"
        runs: dict[str, list] = {"keep": [], "system": []}
        for i in range(a.pairs):
            for keep in (True, False) if i % 2 == 0 else (False, True):
                r = worker("offline", keep, ["--reps", "3", "--tile", str(tile)])
                runs["keep" if keep else "system"].append({"first": r["all"][0], "best": min(r["all"][1:])})
                print(key, "keep" if keep else "system", runs["keep" if keep else "system"][-1], flush=True)
        res[key] = {"runs": runs}
        for m in ("first", "best"):
            k = statistics.median(r[m] for r in runs["keep"])
            s = statistics.median(r[m] for r in runs["system"])
            res[key][m] = {"keep_s": k, "system_s": s, "speedup": s / k}
    runs = {"keep": [], "system": []}
    for i in range(a.train_pairs):
        for keep in (True, False) if i % 2 == 0 else (False, True):
            r = worker("train", keep, ["--steps", "4", "--warmup-steps", "2"])
            side = "keep" if keep else "system"
            runs[side].append({"warmup": r["warmup_s"], "step": statistics.median(r["step_s"])})
            print("train", side, runs[side][-1], flush=True)
    if a.train_pairs:
        res["train"] = {"runs": runs}
        for m, f in (("warmup", lambda r: sum(r["warmup"])), ("step", lambda r: r["step"])):
            k = statistics.median(f(r) for r in runs["keep"])
            s = statistics.median(f(r) for r in runs["system"])
            res["train"][m] = {"keep_s": k, "system_s": s, "speedup": s / k}
    (rave_bench.OUT / "results-malloc-ab.json").write_text(json.dumps(res, indent=1))
    print("| what (v2, 1 thread, CPU s, median over pairs) | glibc default | kept memory | speed-up |")
    print("|---|---|---|---|")
    for key, r in res.items():
        for m in [m for m in r if m != "runs"]:
            print(f"| {key} {m} | {r[m]['system_s']:.3f} | {r[m]['keep_s']:.3f} | {r[m]['speedup']:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
