"""Preprocessing throughput: acids-preprocess against `rave preprocess` and decode+resample, in one run.

    .venv/bin/python tools/bench/preprocess_bench.py [--repeat 8] [--reps 2] [--skip-rave] [--corpus DIR]

Every tool runs as a subprocess under measure.py (CPU of the whole process tree, peak memory), the tools
alternate inside each repetition, and the best repetition is kept. Results go to
bench-out/preprocess/<time>/results.{json,md}; the markdown is printed on stdout. See README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl

TARGETS = {"vs_rave": 4.0, "vs_floor": 0.5, "f0_alone_xrt": 50.0}


# ---------------------------------------------------------------------------------------------------------
# the tools


def find_ours(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    local = Path(sys.executable).parent / "acids-preprocess"
    if local.exists():
        return str(local)
    return shutil.which("acids-preprocess")


def ours_count(out: Path, stdout: Path) -> dict[str, Any]:
    """Chunks in an acids-preprocess dataset: the stdout record, the reader, and per-file counts."""
    res: dict[str, Any] = {"chunks": None, "shape": None, "per_file": None}
    for line in stdout.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "dataset":
            res["record"] = {k: rec.get(k) for k in ("chunks", "seconds", "files_ok", "files_skipped")}
            res["chunks"] = rec.get("chunks")
    try:
        from acids_data.reader import ShardReader

        r = ShardReader(out)
        res["chunks_reader"] = len(r)
        if len(r):
            res["shape"] = list(r[0]["audio"].shape)
    except Exception as e:  # the reader is optional for this bench: say why it is missing
        res["reader_error"] = f"{type(e).__name__}: {e}"
    try:
        man = json.loads((out / "manifest.json").read_text())
        files = man.get("files") or man.get("sources") or []
        if isinstance(files, dict):
            files = [{"path": k, **v} for k, v in files.items()]
        per = {}
        for f in files:
            n = f.get("chunks", f.get("n_chunks", (f.get("info") or {}).get("chunks")))
            if f.get("path") is not None and n is not None:
                per[str(f["path"])] = int(n)
        res["per_file"] = per or None
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return res


class Tool:
    def __init__(
        self,
        name: str,
        cmd: Any,
        count: Any = None,
        env: dict[str, str] | None = None,
        on_repeat: bool = True,
    ) -> None:
        self.name, self.cmd, self.count, self.env, self.on_repeat = name, cmd, count, env, on_repeat


def make_tools(args: argparse.Namespace, notes: list[str]) -> tuple[list[Tool], dict[str, Any]]:
    tools: list[Tool] = []
    versions: dict[str, Any] = {"ffmpeg": bl.ffmpeg_version()}
    L = args.chunk

    def decode_cmd(corpus: bl.Corpus, out: Path) -> list[str]:
        out.mkdir(parents=True, exist_ok=True)
        lst = out / "files.txt"
        lst.write_text("\n".join(str(p) for p in corpus.paths()) + "\n")
        return [
            sys.executable,
            str(bl.HERE / "decode_resample.py"),
            "--list",
            str(lst),
            "--sample-rate",
            str(args.sample_rate),
            "--channels",
            "1",
            "--json",
            str(out / "decode.json"),
        ]

    def decode_count(out: Path, stdout: Path) -> dict[str, Any]:
        d = json.loads((out / "decode.json").read_text())
        per = {f["path"]: f["out_len"] // L for f in d["files"]}
        return {
            "chunks": sum(per.values()),
            "per_file_expected": per,
            "loop_cpu_s": d["loop_cpu_s"],
            "imports_cpu_s": d["imports_cpu_s"],
        }

    tools.append(Tool("decode+resample (soundfile + soxr HQ)", decode_cmd, decode_count))

    if args.skip_rave:
        notes.append("rave: skipped (--skip-rave)")
    elif (why := bl.check_ffmpeg()) is not None:
        notes.append("rave: skipped: " + why)
        print("warning: " + why, file=sys.stderr)
    else:
        venv = args.rave_venv
        versions["rave_venv"] = bl.ensure_rave_venv(venv)
        if L % 2:
            raise SystemExit("--chunk must be even: rave writes chunks of 2*num_signal samples")

        def rave_cmd(corpus: bl.Corpus, out: Path) -> list[str]:
            # scripts/preprocess.py reads n_signal*4 bytes of s16le per chunk = 2*num_signal samples
            return [
                str(venv / "bin" / "rave"),
                "preprocess",
                "--input_path",
                str(corpus.root),
                "--output_path",
                str(out / "db"),
                "--num_signal",
                str(L // 2),
                "--channels",
                "1",
                "--sampling_rate",
                str(args.sample_rate),
            ]

        tools.append(
            Tool(
                "rave preprocess (acids-rave 2.3.1)",
                rave_cmd,
                lambda out, _stdout: bl.rave_count(venv, out / "db"),
            )
        )

    ours = None if args.skip_ours else find_ours(args.ours)
    if ours is None:
        notes.append(
            "acids-preprocess: not run ("
            + (
                "--skip-ours"
                if args.skip_ours
                else "not installed: pip install -e packages/acids-core -e packages/acids-data"
            )
            + ")"
        )
        return tools, versions
    try:
        versions["acids-data"] = importlib.metadata.version("acids-data")
    except importlib.metadata.PackageNotFoundError:
        versions["acids-data"] = "?"

    def ours_cmd(features: str, jobs: int) -> Any:
        def cmd(corpus: bl.Corpus, out: Path) -> list[str]:
            # --pad skip: like rave, no zero-padded chunk for short files and tails (the default pads them)
            return [
                ours,
                str(corpus.root),
                "-o",
                str(out / "ds"),
                "--sample-rate",
                str(args.sample_rate),
                "--channels",
                "1",
                "--chunk",
                str(L),
                "--hop",
                str(L),
                "--pad",
                "skip",
                "--features",
                features,
                "--jobs",
                str(jobs),
                "-q",
            ]

        return cmd

    def count(out: Path, stdout: Path) -> dict[str, Any]:
        return ours_count(out / "ds", stdout)

    for j in args.jobs:
        tools.append(Tool(f"acids-preprocess --features none --jobs {j}", ours_cmd("none", j), count))
    if args.features != "none":
        for j in args.features_jobs:
            tools.append(
                Tool(
                    f"acids-preprocess --features {args.features} --jobs {j}",
                    ours_cmd(args.features, j),
                    count,
                    on_repeat=args.features_on_repeat,
                )
            )
    return tools, versions


# ---------------------------------------------------------------------------------------------------------
# running


def run_set(
    label: str, corpus: bl.Corpus, tools: list[Tool], reps: int, work: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    runs = []
    for r in range(reps):
        order = tools if r % 2 == 0 else tools[::-1]  # alternate, so drift in load hits every tool alike
        for t in order:
            if label != "1x" and not t.on_repeat:
                continue
            slug = "".join(c if c.isalnum() else "-" for c in t.name).strip("-")[:60]
            out = work / label / f"{slug}.r{r + 1}"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            cmd = t.cmd(corpus, out)
            print(f"[{label} r{r + 1}] {t.name} ...", file=sys.stderr, flush=True)
            rec = bl.measured(cmd, out, "run", timeout=args.timeout, env=t.env)
            rec.update(tool=t.name, set=label, rep=r + 1, audio_s=corpus.seconds, files=len(corpus.files))
            if rec["rc"] != 0:
                tail = Path(rec["stderr_path"]).read_text(errors="replace")[-1500:]
                print(f"  rc={rec['rc']}; stderr tail:\n{tail}", file=sys.stderr)
            try:
                rec["count"] = t.count(out, Path(rec["stdout_path"])) if t.count else {}
            except Exception as e:
                rec["count"] = {"error": f"{type(e).__name__}: {e}"}
            rec["output_bytes"] = bl.du_bytes(out) - sum(
                p.stat().st_blocks * 512 for p in out.glob("run.*") if p.is_file()
            )
            print(
                f"  wall {rec['wall_s']:.2f} s  cpu {rec['cpu_s']:.2f} s  "
                f"maxrss {rec['maxrss_kib'] >> 10} MiB  "
                f"tree PSS {rec['peak_tree_pss_kib'] >> 10} MiB  chunks {rec['count'].get('chunks')}  "
                f"load {rec['loadavg_before'][0]}",
                file=sys.stderr,
                flush=True,
            )
            if not args.keep:
                for p in out.iterdir():
                    if p.is_dir():
                        shutil.rmtree(p)
            runs.append(rec)
    return runs


def summarise(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        s = out.setdefault((r["set"], r["tool"]), {"runs": [], "audio_s": r["audio_s"], "files": r["files"]})
        s["runs"].append(r)
    for s in out.values():
        ok = [r for r in s["runs"] if r["rc"] == 0] or s["runs"]
        s["ok"] = all(r["rc"] == 0 for r in s["runs"])
        s["best_wall"] = min(r["wall_s"] for r in ok)
        s["best_cpu"] = min(r["cpu_s"] for r in ok)
        s["xrt_wall"] = s["audio_s"] / s["best_wall"]
        s["xrt_cpu"] = s["audio_s"] / s["best_cpu"] if s["best_cpu"] > 0 else float("nan")
        s["maxrss_mib"] = max(r["maxrss_kib"] for r in s["runs"]) / 1024
        s["tree_pss_mib"] = max(r["peak_tree_pss_kib"] for r in s["runs"]) / 1024
        s["chunks"] = ok[0].get("count", {}).get("chunks")
        s["shape"] = ok[0].get("count", {}).get("shape")
        s["output_mib"] = ok[0].get("output_bytes", 0) / 2**20
        s["load"] = [r["loadavg_before"][0] for r in s["runs"]]
    return out


def chunk_check(
    summ: dict[tuple[str, str], dict[str, Any]], label: str, floor_name: str, corpus: bl.Corpus
) -> list[str]:
    """Compare chunk counts with the exact count from the decode+resample lengths (floor per file)."""
    lines = []
    floor = summ.get((label, floor_name))
    if floor is None:
        return lines
    expected = floor["runs"][0].get("count", {})
    exp_total = expected.get("chunks")
    n_files = len(corpus.files)
    for (lab, tool), s in summ.items():
        if lab != label or tool == floor_name or s["chunks"] is None or exp_total is None:
            continue
        diff = s["chunks"] - exp_total
        verdict = "OK" if abs(diff) <= n_files else "MISMATCH"
        line = (
            f"- {tool}: {s['chunks']} chunks, expected {exp_total} (sum over {n_files} files of "
            f"floor(resampled length / chunk)); difference {diff:+d} -> {verdict} (tolerance 1/file)"
        )
        per = s["runs"][0].get("count", {}).get("per_file")
        per_exp = expected.get("per_file_expected")
        if per and per_exp:
            by_name = {Path(k).resolve(): v for k, v in per.items()}
            bad = []
            for path, n in per_exp.items():
                got = by_name.get(Path(path).resolve(), 0)
                if abs(got - n) > 1:
                    bad.append(f"{Path(path).name}: {got} vs {n}")
            line += f"; per file: {len(per_exp) - len(bad)}/{len(per_exp)} within 1"
            if bad:
                line += " (off: " + ", ".join(bad[:5]) + ")"
        if s["shape"] is not None:
            line += f"; chunk shape (C, L) = {tuple(s['shape'])}"
        lines.append(line)
    return lines


def fmt_table(summ: dict[tuple[str, str], dict[str, Any]], label: str) -> list[str]:
    rows = [(t, s) for (lab, t), s in summ.items() if lab == label]
    if not rows:
        return []
    audio = rows[0][1]["audio_s"]
    lines = [
        f"**{label} set: {audio:.1f} s of audio, {rows[0][1]['files']} files**",
        "",
        "| tool | wall s (r1/r2/..) | CPU s (r1/r2/..) | x-rt (best wall) | **x-rt / CPU-s** (best) | "
        "peak RSS, largest process | peak tree PSS (sampled) | chunks | output MiB | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, s in rows:
        walls = " / ".join(f"{r['wall_s']:.2f}" for r in s["runs"])
        cpus = " / ".join(f"{r['cpu_s']:.2f}" for r in s["runs"])
        flag = "" if s["ok"] else " (rc " + ",".join(str(r["rc"]) for r in s["runs"]) + ")"
        lines.append(
            f"| {t}{flag} | {walls} | {cpus} | {s['xrt_wall']:.0f} | **{s['xrt_cpu']:.0f}** | "
            f"{s['maxrss_mib']:.0f} MiB | {s['tree_pss_mib']:.0f} MiB | {s['chunks']} | "
            f"{s['output_mib']:.1f} | {'/'.join(f'{x:.1f}' for x in s['load'])} |"
        )
    return lines


def ratios(
    summ: dict[tuple[str, str], dict[str, Any]],
    labels: list[str],
    names: dict[str, str],
    f0rec: dict[str, Any] | None,
    args: argparse.Namespace,
) -> tuple[list[str], dict[str, Any]]:
    lines: list[str] = []
    data: dict[str, Any] = {}

    def get(label: str, tool: str) -> dict[str, Any] | None:
        s = summ.get((label, tool))
        return s if s and s["ok"] else None

    def verdict(x: float, target: float) -> str:
        return "meets" if x >= target else "BELOW"

    for label in labels:
        rave, floor = get(label, names["rave"]), get(label, names["floor"])
        for j in args.jobs:
            ours = get(label, f"acids-preprocess --features none --jobs {j}")
            if ours is None:
                continue
            if rave:
                x = ours["xrt_cpu"] / rave["xrt_cpu"]
                data[f"{label}/ours_j{j}_vs_rave"] = x
                lines.append(
                    f"- [{label}] ours (none, jobs {j}) / rave, x-rt per CPU-s: **{x:.2f}x** "
                    f"(target >= {TARGETS['vs_rave']:g}x: {verdict(x, TARGETS['vs_rave'])}); "
                    f"wall: {ours['xrt_wall'] / rave['xrt_wall']:.2f}x"
                )
            if floor:
                x = ours["xrt_cpu"] / floor["xrt_cpu"]
                data[f"{label}/ours_j{j}_vs_floor"] = x
                lines.append(
                    f"- [{label}] ours (none, jobs {j}) / decode+resample alone, x-rt per CPU-s: "
                    f"**{x:.2f}x** (target >= {TARGETS['vs_floor']:g}x: {verdict(x, TARGETS['vs_floor'])})"
                )
        for j in args.features_jobs if args.features != "none" else []:
            feat = get(label, f"acids-preprocess --features {args.features} --jobs {j}")
            base = get(label, f"acids-preprocess --features none --jobs {j}") or next(
                (
                    get(label, f"acids-preprocess --features none --jobs {k}")
                    for k in args.jobs
                    if get(label, f"acids-preprocess --features none --jobs {k}")
                ),
                None,
            )
            if feat and base:
                x = feat["xrt_cpu"] / base["xrt_cpu"]
                data[f"{label}/features_j{j}_vs_none"] = x
                lines.append(
                    f"- [{label}] with --features {args.features} (jobs {j}) / without, x-rt per CPU-s: "
                    f"**{x:.2f}x** ({feat['xrt_cpu']:.0f} vs {base['xrt_cpu']:.0f} x-rt/CPU-s)"
                )
            if feat and rave:
                lines.append(
                    f"- [{label}] with --features {args.features} (jobs {j}) / rave (no features), x-rt "
                    f"per CPU-s: {feat['xrt_cpu'] / rave['xrt_cpu']:.2f}x"
                )
    if f0rec:
        x = f0rec.get("xrt_per_cpu_s")
        data["f0_alone_xrt_per_cpu_s"] = x
        if x:
            lines.append(
                f"- f0 extraction alone (acids_data.features.f0, one thread, {f0rec['audio_s']:.0f} s of "
                f"audio at {args.sample_rate} Hz, hop 512): **{x:.0f}x real time per CPU-s** "
                f"(target >= {TARGETS['f0_alone_xrt']:g}x: {verdict(x, TARGETS['f0_alone_xrt'])}); "
                f"{f0rec['cpu_s']:.2f} CPU-s, warm-up {f0rec['warmup_cpu_s']:.2f} CPU-s not counted"
            )
    if len(labels) > 1:
        for j in args.jobs:
            a = get(labels[0], f"acids-preprocess --features none --jobs {j}")
            b = get(labels[1], f"acids-preprocess --features none --jobs {j}")
            if a and b:
                data[f"mem_j{j}"] = {
                    labels[0]: [a["maxrss_mib"], a["tree_pss_mib"]],
                    labels[1]: [b["maxrss_mib"], b["tree_pss_mib"]],
                }
                lines.append(
                    f"- peak memory, ours (none, jobs {j}): {labels[0]} {a['maxrss_mib']:.0f} MiB largest "
                    f"process / {a['tree_pss_mib']:.0f} MiB tree PSS; {labels[1]} "
                    f"{b['maxrss_mib']:.0f} / {b['tree_pss_mib']:.0f} MiB "
                    f"(x{b['tree_pss_mib'] / max(a['tree_pss_mib'], 1e-9):.2f} tree PSS for "
                    f"x{b['audio_s'] / a['audio_s']:.0f} the data)"
                )
        for j in args.features_jobs if args.features != "none" else []:
            a = get(labels[0], f"acids-preprocess --features {args.features} --jobs {j}")
            if a:
                lines.append(
                    f"- peak memory, ours (--features {args.features}, jobs {j}), {labels[0]}: "
                    f"{a['maxrss_mib']:.0f} MiB largest process / {a['tree_pss_mib']:.0f} MiB tree PSS"
                )
    return lines, data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="audio folder to use instead of the built-in corpus (bench-out/corpus)",
    )
    ap.add_argument("--data-root", type=Path, default=bl.DATA_ROOT, help="sources of the built-in corpus")
    ap.add_argument(
        "--repeat", type=int, default=8, help="also run a set of K copies of the corpus (0/1: off)"
    )
    ap.add_argument("--reps", type=int, default=2, help="repetitions on the 1x set (alternating)")
    ap.add_argument("--reps-repeat", type=int, default=1, help="repetitions on the Kx set")
    ap.add_argument(
        "--chunk", type=int, default=131072, help="chunk length in samples (rave: num_signal = chunk/2)"
    )
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--jobs", default="1,2", help="--jobs values for acids-preprocess --features none")
    ap.add_argument("--features", default="loudness,f0", help="feature run ('none' to skip it)")
    ap.add_argument("--features-jobs", default="1", help="--jobs values for the feature run")
    ap.add_argument("--features-on-repeat", action="store_true", help="also run the features on the Kx set")
    ap.add_argument("--skip-rave", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-f0", action="store_true", help="skip the in-process f0-alone measurement")
    ap.add_argument("--ours", default=None, help="acids-preprocess executable [default: next to this python]")
    ap.add_argument("--rave-venv", type=Path, default=bl.BENCH_OUT / "venv-rave")
    ap.add_argument(
        "--install-only", action="store_true", help="install the rave venv and build the corpus, exit"
    )
    ap.add_argument("--out", type=Path, default=bl.BENCH_OUT / "preprocess")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per run (rave hangs on undecodable files)")
    ap.add_argument("--keep", action="store_true", help="keep the datasets written")
    args = ap.parse_args()
    args.jobs = [int(j) for j in args.jobs.split(",") if j]
    args.features_jobs = [int(j) for j in args.features_jobs.split(",") if j]

    notes: list[str] = []
    if args.corpus:
        corpus = bl.scan_corpus(args.corpus.resolve())
        odd = [
            f["path"]
            for f in corpus.files
            if Path(f["path"]).suffix.lower() not in (".wav", ".flac", ".mp3", ".ogg", ".aif", ".aiff")
        ]
        if odd:
            notes.append(f"corpus has {len(odd)} files that not every tool reads: {odd[:3]}")
    else:
        corpus = bl.build_corpus(bl.BENCH_OUT / "corpus", args.data_root)
    if not corpus.files:
        raise SystemExit(f"no audio in {corpus.root}")
    sets = [("1x", corpus)]
    if args.repeat > 1 and args.corpus:
        notes.append(
            f"--repeat {args.repeat} ignored with --corpus: copies would be hard links, and acids-preprocess "
            "skips files whose content it has already seen"
        )
    elif args.repeat > 1:
        rep_dir = bl.BENCH_OUT / f"{corpus.root.name}-x{args.repeat}"
        sets.append((f"{args.repeat}x", bl.repeat_corpus(corpus, args.repeat, rep_dir, args.data_root)))

    tools, versions = make_tools(args, notes)
    if args.install_only:
        print(
            json.dumps(
                {"corpus": str(corpus.root), "audio_s": corpus.seconds, "versions": versions, "notes": notes},
                indent=1,
            )
        )
        return 0

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.out / stamp
    work.mkdir(parents=True, exist_ok=True)
    machine = bl.machine_info()
    runs: list[dict[str, Any]] = []
    for label, c in sets:
        runs += run_set(label, c, tools, args.reps if label == "1x" else args.reps_repeat, work, args)

    f0rec = None
    if not args.skip_f0 and "f0" in args.features and any("acids-preprocess" in t.name for t in tools):
        lst = work / "f0-files.txt"
        lst.write_text("\n".join(str(p) for p in corpus.paths()) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        print("[f0 alone] ...", file=sys.stderr, flush=True)
        rec = bl.measured(
            [
                sys.executable,
                str(bl.HERE / "f0_alone.py"),
                "--list",
                str(lst),
                "--sample-rate",
                str(args.sample_rate),
                "--json",
                str(work / "f0.json"),
            ],
            work,
            "f0",
            timeout=args.timeout,
            env=env,
        )
        if rec["rc"] == 0 and (work / "f0.json").exists():
            f0rec = {**json.loads((work / "f0.json").read_text()), "process": rec}
        else:
            notes.append(
                f"f0 alone failed (rc {rec['rc']}): "
                + Path(rec["stderr_path"]).read_text(errors="replace")[-300:].strip()
            )

    summ = summarise(runs)
    names = {"rave": "rave preprocess (acids-rave 2.3.1)", "floor": "decode+resample (soundfile + soxr HQ)"}
    labels = [lab for lab, _ in sets]
    md = [
        f"# acids-preprocess benchmark ({machine['time']})",
        "",
        f"Machine: {machine['cpus']} CPUs, load average at start {machine['loadavg']}. "
        f"Chunk {args.chunk} samples at {args.sample_rate} Hz, mono int16, no overlap. "
        f"Best of {args.reps} alternating repetition(s) on 1x"
        + (f", {args.reps_repeat} on {labels[1]}" if len(labels) > 1 else "")
        + ". CPU = user+sys of the whole "
        "process tree (stable on this shared VM); wall is noisy.",
        "",
    ]
    for label in labels:
        md += [*fmt_table(summ, label), ""]
        md += [*chunk_check(summ, label, names["floor"], dict(sets)[label]), ""]
    rlines, rdata = ratios(summ, labels, names, f0rec, args)
    md += ["## Ratios (issue targets)", "", *(rlines or ["- (no acids-preprocess run: no ratios)"]), ""]
    md += [
        "## Notes",
        "",
        "- Peak RSS, largest process = ru_maxrss of RUSAGE_CHILDREN: the kernel keeps the max over the "
        "descendants, not their sum. Tree PSS = sum of PSS over the live process tree, sampled at 10 Hz "
        "(shared pages split between processes; short peaks can be missed).",
        "- rave: ffmpeg subprocess per file, mono = left channel; ours and decode+resample: mean of the "
        "channels. ours runs with --pad skip (rave drops tails and files shorter than a chunk).",
        "- x-rt = seconds of input audio / seconds (wall or CPU). 1x figures include start-up "
        "(rave imports torch: ~3 CPU-s); the Kx set is the steady state.",
        *[f"- {n}" for n in notes],
        f"- versions: {json.dumps(versions)}",
        "",
    ]
    text = "\n".join(md)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "corpus": {"root": str(corpus.root), "audio_s": corpus.seconds, "files": corpus.files},
                "versions": versions,
                "notes": notes,
                "runs": runs,
                "f0_alone": f0rec,
                "ratios": rdata,
                "summary": [
                    {"set": k[0], "tool": k[1], **{a: b for a, b in v.items() if a != "runs"}}
                    for k, v in summ.items()
                ],
            },
            indent=1,
            default=str,
        )
    )
    latest = args.out / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(work.name)
    print(text)
    print(f"(results: {work}/results.json, .md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
