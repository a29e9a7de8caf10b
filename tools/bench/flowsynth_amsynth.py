#!/usr/bin/env python3
"""Cost and determinism of rendering amsynth presets through DawDreamer (acids-flowsynth's amsynth backend).

16 distinct shipped presets, C4 velocity 100, held 3 s, 4 s rendered. Each variant runs in its own
process; its CPU (its own + its children's, from getrusage) and wall time are reported, with the max abs
difference between two renders of the same preset separated by another preset (A, B, A):

* ``fork``: the backend (a worker with a pristine instance forks a child per sound), jobs 1 and 2;
* ``fresh``: a new RenderEngine + plugin instance per sound, in one process;
* ``shared``: one instance reused for every sound.

    python tools/bench/flowsynth_amsynth.py [--sample-rate 22050] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

N = 16


def _presets():
    from acids_flowsynth import amsynth as am

    _, v = am.unique_presets(*am.bank_presets())
    return v[:: len(v) // N][:N]


def _daw_render(engine, proc, vector, sr):
    for i, u in enumerate(vector):
        proc.set_parameter(i, float(u))
    proc.clear_midi()
    proc.add_midi_note(60, 100, 0.0, 3.0)
    engine.render(4.0)
    return engine.get_audio().mean(axis=0)


def variant(name: str, sr: int) -> dict:
    import numpy as np

    v = _presets()
    if not name.startswith("fork"):
        import dawdreamer  # imported before the clock starts, as torch for "fork"

        del dawdreamer
    else:
        import torch

        del torch
    me = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = me.ru_utime + me.ru_stime
    t0 = time.perf_counter()
    if name.startswith("fork"):
        import torch

        from acids_flowsynth.amsynth import AmsynthSynth

        b = AmsynthSynth(jobs=int(name[-1]))
        out = b.render(torch.from_numpy(v), sample_rate=sr).numpy()
        wall = time.perf_counter() - t0
        aba = b.render(torch.from_numpy(v[[0, 1, 0]]), sample_rate=sr).numpy()
        b.close()
    else:
        import dawdreamer as daw

        from acids_flowsynth.amsynth import find_plugin

        def make():
            e = daw.RenderEngine(sr, 512)
            p = e.make_plugin_processor("am", find_plugin())
            e.load_graph([(p, [])])
            return e, p

        if name == "fresh":
            out = np.stack([_daw_render(*make(), x, sr) for x in v])
            wall = time.perf_counter() - t0
            aba = np.stack([_daw_render(*make(), v[k], sr) for k in (0, 1, 0)])
        else:
            e, p = make()
            out = np.stack([_daw_render(e, p, x, sr) for x in v])
            wall = time.perf_counter() - t0
            aba = np.stack([_daw_render(e, p, v[k], sr) for k in (0, 1, 0)])
    return {
        "cpu0": cpu0,
        "wall_s": wall,
        "aba_max_diff": float(np.abs(aba[0] - aba[2]).max()),
        "peak": float(abs(out).max()),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        r = variant(args.variant, args.sample_rate)
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        r["cpu_s_total"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - r.pop("cpu0")
        print(json.dumps(r))
        return 0
    print(f"amsynth via DawDreamer, {N} presets x 4 s at {args.sample_rate} Hz")
    print(
        "CPU: the process's own after its imports + its children's (worker start and plugin load included),"
    )
    print("for the 16 renders and the 3 of the A-B-A check")
    print(f"{'variant':8} {'cpu s':>8} {'wall s':>8} {'A-B-A max diff':>15}")
    for name in ("fork1", "fork2", "fresh", "shared"):
        for _ in range(args.repeat):
            cmd = [sys.executable, __file__, "--variant", name, "--sample-rate", str(args.sample_rate)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{name:8} {d['cpu_s_total']:8.2f} {d['wall_s']:8.2f} {d['aba_max_diff']:15.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
