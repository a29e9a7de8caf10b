"""Render speed of the acids-flowsynth default synth (acids-sub): 16 notes of 4 s, one torch thread.

Reference (../shared/reference/flowsynth-and-others.md): torchsynth's Voice rendered 16 x 4 s at 44.1 kHz
in 0.27 s of process CPU (1 thread) on the same kind of shared 2-core machine. This prints the process CPU
time and the wall time of the same batch at 44.1 kHz and at the paper's 22.05 kHz, best of N runs (the
machines are shared: the minimum is the least disturbed measurement), in inference mode and with autograd.

    .venv/bin/python tools/bench/flowsynth_render.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from acids_flowsynth.synth import get_backend

TORCHSYNTH_CPU_S = 0.27


def measure(synth, params: torch.Tensor, sample_rate: int, runs: int, grad: bool) -> dict[str, float]:
    cpu, wall = [], []
    for _ in range(runs + 1):  # the first run warms up (caches the noise spectrum, allocator)
        p = params.clone().requires_grad_(grad)
        c0, w0 = time.process_time(), time.perf_counter()
        if grad:
            synth.render(p, sample_rate=sample_rate).square().mean().backward()
        else:
            with torch.inference_mode():
                synth.render(p, sample_rate=sample_rate)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    cpu, wall = cpu[1:], wall[1:]
    return {"cpu_min_s": min(cpu), "cpu_median_s": sorted(cpu)[len(cpu) // 2], "wall_min_s": min(wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    synth = get_backend("acids-sub")
    params = torch.rand(args.batch, len(synth.params), generator=torch.Generator().manual_seed(0))
    rows = []
    for sr in (44100, 22050):
        for grad in (False, True):
            r = measure(synth, params, sr, args.runs, grad)
            seconds = args.batch * 4.0
            r.update(
                sample_rate=sr,
                mode="render + backward" if grad else "render (inference)",
                realtime_x_cpu=seconds / r["cpu_min_s"],
                vs_torchsynth=r["cpu_min_s"] / TORCHSYNTH_CPU_S,
            )
            rows.append(r)
            print(
                f"{sr:>6} Hz {r['mode']:<20} CPU {r['cpu_min_s']:.3f} s (median {r['cpu_median_s']:.3f}), "
                f"wall {r['wall_min_s']:.3f} s, {r['realtime_x_cpu']:.0f}x real time (CPU), "
                f"{r['vs_torchsynth']:.2f}x torchsynth's {TORCHSYNTH_CPU_S} s"
            )
    print(json.dumps({"batch": args.batch, "seconds_each": 4.0, "rows": rows}))


if __name__ == "__main__":
    main()
