"""How fast float32 streaming could be on this CPU: our exported streaming model against its own floor.

    .venv/bin/python tools/bench/rave_stream_floor.py [--config v2] [--calls 32] [--results FILE]
    .venv/bin/python tools/bench/rave_stream_floor.py --config v2 --two-row-ab 16  # only the A/B below

One process, 1 thread, CPU clock, the exported float32 streaming model (``script(exportable(...,
streaming=True))``, untrained weights) on ``--block``-sample calls (2048) of noise at the bench's level:

1. ``call``: one streaming call, as ``rave_bench.py`` times it (best of 5 passes of ``--calls`` calls).
2. ``rest``: the same call with every convolution's matrix product replaced by an empty result of its
   shape (``Conv1d._product`` patched before scripting, in a second process): the cached pads, unfolds,
   activations, residual sums, PQMF and the TorchScript interpreter; what no faster product can remove.
3. ``products``: ``call - rest``; split by frames per product (M) from a profile of one pass of the
   same model without the two-frame products by blocks (each layer's product as one ``F.linear``),
   whose call is timed too.
4. ``one-frame floor``: every product's weight read once at the rate MKL's one-frame product (``F.linear``
   of one row) reads a weight of that shape from memory (copies totalling >= 64 MB so nothing stays in
   cache). A product of M >= 2 frames that read its weight once, as fast as one frame, would take this.
5. MKL's small-M products with the weight in cache (768 x 2304): the M = 2 product takes about twice the
   one-frame time even there, so its slowness is the kernel, not memory.

``--two-row-ab N``: instead, the exported model with and without the two-row products by blocks
(``Conv1d.two_row_min_weights``; off: one ``F.linear`` per product), in one process, N alternated passes
each, median ms per call and the speed-up.

With ``--results`` (a ``rave_bench.py`` results JSON) the official streaming call of the same run is read
and ``official / (rest + one-frame floor)`` printed: the best ratio float32 streaming could reach with
products as fast as the one-frame product, against the 3x target of issue 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

BLOCK = 2048


def _time_calls(ts: torch.jit.ScriptModule, x: torch.Tensor, calls: int, passes: int = 5) -> float:
    best = float("inf")
    with torch.inference_mode():
        for i in range(8):
            ts(x[..., i * BLOCK : (i + 1) * BLOCK])
        for _ in range(passes):
            t0 = time.process_time()
            for i in range(calls):
                ts(x[..., i * BLOCK : (i + 1) * BLOCK])
            best = min(best, (time.process_time() - t0) / calls)
    return best


def _build(config: str, empty_products: bool, two_rows: bool = True) -> torch.jit.ScriptModule:
    from acids_rave.blocks import Conv1d
    from acids_rave.config import load_config
    from acids_rave.export import exportable, script
    from acids_rave.model import Rave

    torch.manual_seed(0)
    model = Rave(load_config(config)).eval()
    if not two_rows:  # two-frame products as one F.linear (before Conv1d's two-row products)
        for m in model.modules():
            if isinstance(m, Conv1d):
                m.two_row_min_weights = 2**62
    if not empty_products:
        return script(exportable(model, streaming=True))
    original = Conv1d._product

    def _product(self, rows: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.empty(rows.shape[0], w2.shape[0], dtype=rows.dtype)

    Conv1d._product = _product
    try:
        return script(exportable(model, streaming=True))
    finally:
        Conv1d._product = original


def _product_shapes(ts: torch.jit.ScriptModule, x: torch.Tensor, calls: int) -> dict[tuple, dict]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for i in range(calls):
            ts(x[..., i * BLOCK : (i + 1) * BLOCK])
    shapes: dict[tuple[int, int, int], dict] = {}
    for e in p.key_averages(group_by_input_shape=True):
        if e.key == "aten::addmm" and len(e.input_shapes) >= 3 and len(e.input_shapes[2]) == 2:
            m = e.input_shapes[1][0]
            k, n = e.input_shapes[2]
            shapes[(m, k, n)] = {"count": e.count // calls, "ms": e.self_cpu_time_total / calls / 1e3}
    return shapes


def _one_frame_ms(k: int, n: int) -> float:
    """F.linear of one row with an (n, k) weight read from memory, median of 5 passes over >= 64 MB."""
    copies = max(2, int(64e6 // (k * n * 4)) + 1)
    ws = [torch.randn(n, k) for _ in range(copies)]
    v = torch.randn(1, k)
    res = []
    for _ in range(5):
        t0 = time.process_time()
        for w in ws:
            F.linear(v, w)
        res.append((time.process_time() - t0) / copies)
    return sorted(res)[2] * 1e3


def _in_cache(n: int = 768, k: int = 2304) -> dict[int, float]:
    w = torch.randn(n, k)
    out = {}
    for m in (1, 2, 4, 8):
        x = torch.randn(m, k)
        for _ in range(10):
            F.linear(x, w)
        t0 = time.process_time()
        for _ in range(200):
            F.linear(x, w)
        out[m] = (time.process_time() - t0) / 200 * 1e3
    return out


def _two_row_ab(config: str, x: torch.Tensor, calls: int, passes: int) -> dict[str, float]:
    """The exported model with and without the two-row products by blocks, alternated passes."""
    import statistics

    on, off = _build(config, False), _build(config, False, two_rows=False)
    with torch.inference_mode():
        a = torch.cat([on(x[..., i * BLOCK : (i + 1) * BLOCK]) for i in range(8)], -1)
        b = torch.cat([off(x[..., i * BLOCK : (i + 1) * BLOCK]) for i in range(8)], -1)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for p in range(passes):
        for name in ("on", "off") if p % 2 == 0 else ("off", "on"):
            times[name].append(_time_calls(on if name == "on" else off, x, calls, passes=1) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "on_ms": med["on"],
        "off_ms": med["off"],
        "speedup": med["off"] / med["on"],
        "max_abs_diff": float((a - b).abs().max()),
    }


def _save(name: str, r: dict) -> None:
    out = Path("bench-out/rave-bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(r, indent=1))


def _official_call_ms(path: Path, config: str) -> float | None:
    d = json.loads(path.read_text())
    rows = d.get("results", {}).get(f"stream/{config}", {}).get("official", [])
    if not rows:
        return None
    best = min(rows, key=lambda r: r["seconds"])
    return best["seconds"] / best["blocks"] * 1e3


def main() -> int:
    global BLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="v2")
    ap.add_argument("--calls", type=int, default=32)
    ap.add_argument("--block", type=int, default=2048, help="samples per call")
    ap.add_argument("--results", type=Path, help="a rave_bench.py results JSON with the official stream run")
    ap.add_argument(
        "--two-row-ab",
        type=int,
        default=0,
        metavar="PASSES",
        help="only an in-process A/B of the two-row products by blocks: PASSES alternated passes each",
    )
    ap.add_argument("--rest-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    BLOCK = a.block

    from acids_rave.runtime import keep_freed_memory

    keep_freed_memory()  # as the acids-rave command and rave_bench.py's worker run
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, 1, BLOCK * max(a.calls, 8), generator=g)

    if a.two_row_ab:
        r = _two_row_ab(a.config, x, a.calls, a.two_row_ab)
        print(
            f"{a.config}, {BLOCK}-sample calls, median of {a.two_row_ab} alternated passes of {a.calls} "
            "calls: "
            f"two-row products {r['on_ms']:.2f} ms, one product {r['off_ms']:.2f} ms, {r['speedup']:.3f}x "
            f"(outputs differ by {r['max_abs_diff']:.1e})"
        )
        _save(f"two-row-ab-{a.config}-{BLOCK}.json", r)
        return 0
    if a.rest_worker:  # TorchScript caches a class's compiled methods per process: the patch runs apart
        print(json.dumps({"rest": _time_calls(_build(a.config, empty_products=True), x, a.calls)}))
        return 0
    cmd = [sys.executable, __file__, "--config", a.config, "--calls", str(a.calls), "--block", str(BLOCK)]
    cmd.append("--rest-worker")
    rest = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["rest"]
    ts = _build(a.config, empty_products=False)
    call = _time_calls(ts, x, a.calls)
    # the layers' own product shapes (the two-row products would show their blocks): one product each
    plain = _build(a.config, empty_products=False, two_rows=False)
    call_plain = _time_calls(plain, x, a.calls)
    shapes = _product_shapes(plain, x, a.calls)
    floor = 0.0
    wbytes = 0
    by_m: dict[int, float] = defaultdict(float)
    for (m, k, n), s in shapes.items():
        floor += _one_frame_ms(k, n) * s["count"]
        wbytes += k * n * 4 * s["count"]
        by_m[m] += s["ms"]
    prof_total = sum(by_m.values())
    products = call * 1e3 - rest * 1e3
    cache = _in_cache()
    r = {
        "config": a.config,
        "call_ms": call * 1e3,
        "call_without_two_row_products_ms": call_plain * 1e3,
        "rest_ms": rest * 1e3,
        "products_ms": products,
        "products_share_by_frames": {m: v / prof_total for m, v in sorted(by_m.items())},
        "weights_mb": wbytes / 1e6,
        "one_frame_floor_ms": floor,
        "in_cache_768x2304_ms_by_frames": cache,
    }
    print(f"{a.config}, 1 thread, CPU clock, float32 exported streaming, {BLOCK}-sample calls:")
    print(f"  call                         {r['call_ms']:6.2f} ms")
    print(f"  call, no two-row products    {call_plain * 1e3:6.2f} ms")
    print(f"  rest (products left empty)   {r['rest_ms']:6.2f} ms")
    print(f"  products                     {products:6.2f} ms  ({wbytes / 1e6:.1f} MB of weights)")
    share = ", ".join(f"M={m}: {v:.0%}" for m, v in r["products_share_by_frames"].items())
    print(f"    by frames per product (profile): {share}")
    print(f"  one-frame floor of products  {floor:6.2f} ms  ({wbytes / 1e6 / floor:.1f} GB/s)")
    print(f"  rest + one-frame floor       {r['rest_ms'] + floor:6.2f} ms")
    print(
        "  MKL in cache, 768 x 2304: "
        + ", ".join(f"M={m} {v:.3f} ms" for m, v in cache.items())
        + f" (M=2 / M=1 = {cache[2] / cache[1]:.2f})"
    )
    if a.results:
        off = _official_call_ms(a.results, a.config)
        if off is not None:
            r["official_call_ms"] = off
            r["ratio_now"] = off / r["call_ms"]
            r["ratio_bound"] = off / (r["rest_ms"] + floor)
            print(f"  official call ({a.results.name}) {off:6.2f} ms: ours now {r['ratio_now']:.2f}x,")
            print(f"    with every product at the one-frame rate at most {r['ratio_bound']:.2f}x (target 3x)")
    _save(f"stream-floor-{a.config}-{BLOCK}.json", r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
