"""Random chunk reads: acids_data.reader.ShardReader against a plain np.load(mmap_mode="r") baseline.

    .venv/bin/python tools/bench/reader_bench.py [DATASET] [--reads 20000] [--rounds 5]

Both read the SAME shard files, warm (every page read once first), in the same process, alternating
rounds with the same random index sequence per round. A read = one random chunk as float32 (C, L) (plus the
dataset's feature arrays, copied, when the reader returns them). Without DATASET, a dataset is built with
acids-preprocess (--features none) from the bench corpus repeated --repeat times (bench-out/reader-ds).
Then, for information, the torch ChunkDataset with its default augmentation.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl
import numpy as np

TARGET = 0.8


class MemmapBaseline:
    """The plainest reader of the same files: one np.load(mmap_mode="r") per shard array, bisect for i."""

    def __init__(self, root: Path, keys: list[str]) -> None:
        man = json.loads((root / "manifest.json").read_text())
        self.arrays: list[dict[str, np.ndarray]] = []
        self.ends: list[int] = []
        n = 0
        for sh in man["shards"]:
            arrays = sh["arrays"]
            self.arrays.append({k: np.load(root / "shards" / arrays[k], mmap_mode="r") for k in keys})
            n += sh["n"]
            self.ends.append(n)
        self.keys = keys
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        s = bisect.bisect_right(self.ends, i)
        j = i - (self.ends[s - 1] if s else 0)
        arr = self.arrays[s]
        audio = arr["audio"][j].astype(np.float32)  # (C, L) int16 -> float32 copy
        audio *= np.float32(1 / 32767)
        out = {"audio": audio}
        for k in self.keys:
            if k != "audio":
                out[k] = arr[k][j].astype(np.float32)  # features: float32 copies, like the reader
        return out


def build_dataset(args: argparse.Namespace) -> Path:
    root = bl.BENCH_OUT / f"reader-ds-x{args.repeat}"
    if (root / "manifest.json").exists() and json.loads((root / "manifest.json").read_text()).get("complete"):
        return root
    corpus = bl.build_corpus(bl.BENCH_OUT / "corpus")
    if args.repeat > 1:
        corpus = bl.repeat_corpus(corpus, args.repeat, bl.BENCH_OUT / f"corpus-x{args.repeat}", bl.DATA_ROOT)
    exe = Path(sys.executable).parent / "acids-preprocess"
    exe_s = str(exe) if exe.exists() else shutil.which("acids-preprocess")
    if exe_s is None:
        raise SystemExit(
            "acids-preprocess not installed: pip install -e packages/acids-core -e packages/acids-data"
        )
    if root.exists():
        shutil.rmtree(root)
    cmd = [exe_s, str(corpus.root), "-o", str(root), "--features", args.features, "--pad", "skip", "-q"]
    print("building: " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return root


def time_reads(get: Any, idx: np.ndarray) -> tuple[float, float]:
    """(reads per wall second, reads per CPU second) for get(i) over idx."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in idx:
        get(int(i))
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return len(idx) / w, (len(idx) / c if c > 0 else float("inf"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", type=Path, default=None, help="acids-preprocess dataset directory")
    ap.add_argument("--reads", type=int, default=20000, help="random reads per round and method")
    ap.add_argument("--rounds", type=int, default=7, help="alternating timed rounds")
    ap.add_argument("--warmup", type=int, default=5000, help="untimed random reads per method first")
    ap.add_argument("--repeat", type=int, default=4, help="corpus copies for the built dataset")
    ap.add_argument("--features", default="none", help="--features of the built dataset")
    ap.add_argument("--torch-reads", type=int, default=2000, help="ChunkDataset reads (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=bl.BENCH_OUT / "reader")
    args = ap.parse_args()

    root = args.dataset.resolve() if args.dataset else build_dataset(args)
    try:
        from acids_data.reader import ShardReader
    except ImportError as e:
        raise SystemExit(f"acids_data.reader not importable: {e}") from e

    reader = ShardReader(root)
    n = len(reader)
    sample = reader[0]
    keys = ["audio"] + [k for k in sample if k != "audio" and isinstance(sample[k], np.ndarray)]
    base = MemmapBaseline(root, keys)
    if len(base) != n:
        raise SystemExit(f"baseline sees {len(base)} chunks, ShardReader {n}")
    a, b = reader[n - 1]["audio"], base[n - 1]["audio"]
    same = a.shape == b.shape and a.dtype == b.dtype and np.allclose(a, b, atol=1e-4)
    size = sum(p.stat().st_size for p in (root / "shards").glob("*.npy"))
    print(
        f"dataset {root}: {n} chunks, chunk (C, L) = {tuple(a.shape)} {a.dtype}, keys {keys}, "
        f"{size / 2**20:.0f} MiB; same values as baseline: {same}",
        file=sys.stderr,
    )

    methods = {"ShardReader": reader.__getitem__, "np.load mmap baseline": base.__getitem__}
    rng = np.random.default_rng(args.seed)
    # warm: every chunk's pages once (page cache), then random reads (allocator steady state, see README)
    for get in methods.values():
        for i in range(n):
            get(i)
        for i in rng.integers(0, n, args.warmup):
            get(int(i))
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for r in range(args.rounds):
        idx = rng.integers(0, n, args.reads)
        names = list(methods) if r % 2 == 0 else list(methods)[::-1]
        for m in names:
            res[m].append(time_reads(methods[m], idx))
            print(f"round {r + 1} {m}: {res[m][-1][0]:.0f} reads/s", file=sys.stderr)

    torch_res = None
    if args.torch_reads > 0:
        try:
            import torch

            from acids_data.dataset import ChunkDataset

            torch.set_num_threads(1)  # what one DataLoader worker gets
            ds = ChunkDataset(root)
            item = ds[0]
            for i in rng.integers(0, len(ds), min(200, args.torch_reads)):
                ds[int(i)]
            rate = time_reads(ds.__getitem__, rng.integers(0, len(ds), args.torch_reads))
            desc = (
                {k: tuple(v.shape) for k, v in item.items()}
                if isinstance(item, dict)
                else type(item).__name__
            )
            torch_res = {
                "reads_per_s": rate[0],
                "reads_per_cpu_s": rate[1],
                "item": str(desc),
                "dataset": repr(ds)[:200],
            }
        except Exception as e:  # optional part: report why it did not run
            torch_res = {"error": f"{type(e).__name__}: {e}"}

    best = {m: max(x[0] for x in v) for m, v in res.items()}
    med = {m: statistics.median(x[0] for x in v) for m, v in res.items()}
    cpu = {m: max(x[1] for x in v) for m, v in res.items()}
    ratio_best = best["ShardReader"] / best["np.load mmap baseline"]
    ratio_med = med["ShardReader"] / med["np.load mmap baseline"]
    verdict = (
        "meets" if ratio_med >= TARGET else ("BELOW" if ratio_best < TARGET else "borderline (best only)")
    )
    md = [
        f"# Reader benchmark ({time.strftime('%Y-%m-%d %H:%M:%S')})",
        "",
        f"Dataset {root}: {n} chunks of {tuple(a.shape)}, {size / 2**20:.0f} MiB, keys read {keys}. Warm "
        f"(all pages read once + {args.warmup} random reads per method), {args.rounds} alternating rounds of "
        f"{args.reads} random reads, same indices for both. Load average {os.getloadavg()[0]:.1f}.",
        "",
        "| reader | reads/s per round | best | median | best reads / CPU-s |",
        "|---|---|---|---|---|",
    ]
    for m, v in res.items():
        md.append(
            f"| {m} | {' / '.join(f'{x[0]:.0f}' for x in v)} | {best[m]:.0f} | {med[m]:.0f} | {cpu[m]:.0f} |"
        )
    md += [
        "",
        f"- **ShardReader / np.load mmap: {ratio_best:.2f}x (best), {ratio_med:.2f}x (median)** "
        f"(target >= {TARGET}x: {verdict}); "
        f"values equal to the baseline's: {same}",
    ]
    if torch_res is not None:
        if "error" in torch_res:
            md.append(f"- ChunkDataset (default augmentation): not measured: {torch_res['error']}")
        else:
            md.append(
                f"- ChunkDataset (default augmentation, torch 1 thread), for information: "
                f"{torch_res['reads_per_s']:.0f} reads/s ({torch_res['reads_per_cpu_s']:.0f} per CPU-s); "
                f"item {torch_res['item']}"
            )
    text = "\n".join(md) + "\n"
    work = args.out / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(
        json.dumps(
            {
                "dataset": str(root),
                "chunks": n,
                "keys": keys,
                "bytes": size,
                "rounds": res,
                "best": best,
                "median": med,
                "ratio_best": ratio_best,
                "ratio_median": ratio_med,
                "same_values": same,
                "chunk_dataset": torch_res,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            indent=1,
        )
    )
    print(text)
    print(f"(results: {work}/results.json, .md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
