"""Run one command and measure its whole process tree: wall, CPU (user+sys), peak memory.

Usage: python measure.py --json OUT.json [--stdout F] [--stderr F] [--timeout S] -- CMD...

Why a separate wrapper process: ``getrusage(RUSAGE_CHILDREN)`` is cumulative over a process's lifetime and
its ``ru_maxrss`` is a running maximum, so every measured command gets a fresh wrapper and the figures are
exactly that command's. The wrapper makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): descendants
that their parent never waited for (RAVE's pool workers, the ffmpeg processes its workers spawn) are
re-parented here and reaped, so their CPU time is counted too. The wrapper's own CPU (the memory sampler) is
not in its RUSAGE_CHILDREN and is therefore not counted.

Memory figures:
  maxrss_kib         ru_maxrss of RUSAGE_CHILDREN: the largest peak RSS of any *single* process of the tree
                     (the kernel keeps the max over children, not the sum). Exact.
  peak_tree_pss_kib  peak of the sum of PSS (proportional set size, shared pages split between sharers) over
                     all live processes of the tree, sampled every --interval seconds. Can miss short peaks.
  peak_tree_rss_kib  the same with RSS (double-counts pages shared by fork).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (scan of /proc; Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) may contain spaces: split after its closing parenthesis
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _mem_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, (0, 0) if it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except OSError:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
                pss = rss
        except OSError:
            pass
    return pss, rss


class _Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_procs = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            pids = _descendants(me)
            pss = rss = 0
            for p in pids:
                a, b = _mem_kib(p)
                pss += a
                rss += b
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop.wait(self.interval)


def _kill_tree() -> None:
    for p in _descendants(os.getpid()):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap_all(grace_s: float) -> int:
    """Reap every re-parented descendant; kill those still alive after ``grace_s``. Returns #killed."""
    deadline = time.monotonic() + grace_s
    killed = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return killed
        if pid != 0:
            continue
        if time.monotonic() > deadline:
            live = _descendants(os.getpid())
            killed += len(live)
            _kill_tree()
            deadline = time.monotonic() + 5.0
        time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, required=True, help="where to write the measurement")
    ap.add_argument("--stdout", type=Path, default=None, help="file for the command's stdout")
    ap.add_argument("--stderr", type=Path, default=None, help="file for the command's stderr")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--interval", type=float, default=0.1, help="memory sampling period (s)")
    ap.add_argument("--grace", type=float, default=10.0, help="wait for orphaned descendants (s)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")

    subreaper = _set_subreaper()
    out = open(args.stdout, "wb") if args.stdout else subprocess.DEVNULL
    err = open(args.stderr, "wb") if args.stderr else subprocess.DEVNULL
    sampler = _Sampler(args.interval)
    load0 = os.getloadavg()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    sampler.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree()
        rc = proc.wait()
    wall = time.perf_counter() - t0
    stragglers = _reap_all(args.grace)
    sampler.stop.set()
    sampler.join()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = r1.ru_utime - r0.ru_utime
    sys_ = r1.ru_stime - r0.ru_stime
    rec = {
        "cmd": cmd,
        "rc": 124 if timed_out else rc,
        "timed_out": timed_out,
        "wall_s": round(wall, 4),
        "user_s": round(user, 4),
        "sys_s": round(sys_, 4),
        "cpu_s": round(user + sys_, 4),
        "maxrss_kib": r1.ru_maxrss,
        "peak_tree_pss_kib": sampler.peak_pss,
        "peak_tree_rss_kib": sampler.peak_rss,
        "peak_procs": sampler.peak_procs,
        "subreaper": subreaper,
        "stragglers_killed": stragglers,
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.json.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
