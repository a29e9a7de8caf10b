"""The amsynth render worker: one process holding a pristine amsynth instance, forking one child per sound.

Run by :mod:`acids_flowsynth.amsynth` as ``python -m acids_flowsynth.amsynth_worker PLUGIN SAMPLE_RATE``;
it imports only DawDreamer and numpy (no torch, so ``fork`` copies no thread pool).

Why fork: amsynth keeps state between notes (oscillator and LFO phases, the reverb tail, the noise
generator, which is process-global), so reusing one instance makes a preset's sound depend on what was
rendered before it, and even a fresh instance in the same process differs. The worker loads the plugin
once, **never renders in the parent**, and renders each sound in a forked child: every child starts from
the same bytes of memory, so a sound depends only on its parameters (bit-exact), at about a tenth of the
CPU of loading a fresh instance per sound.

Protocol (binary, on the stdin/stdout pipes; the plugin's own chatter on fd 1 is moved to stderr):

* request: one JSON line ``{"n", "params", "notes", "velocities", "hold", "duration", "jobs"}`` followed by
  ``n * params`` float64 normalised values (VST normalised: raw = lo + u (hi - lo));
* reply: one JSON line ``{"ok": true, "n", "length"}`` followed by ``n * length`` float32 samples (mono: the
  mean of the two channels), or ``{"ok": false, "error"}``.
"""

from __future__ import annotations

import json
import mmap
import os
import sys

PREROLL = 0.25  # seconds rendered before the note-on and dropped: parameter changes settle first
BLOCK = 512


def _render_child(engine, proc, vector, note, velocity, hold, duration, sr, out, offset, length) -> None:
    import numpy as np

    for i, u in enumerate(vector):
        proc.set_parameter(i, float(u))
    pre = round(PREROLL * sr)
    proc.clear_midi()
    proc.add_midi_note(int(note), int(velocity), pre / sr, float(hold))
    engine.render((pre + length) / sr)
    audio = np.asarray(engine.get_audio(), dtype=np.float32)
    mono = audio.mean(axis=0)[pre : pre + length]
    buf = np.zeros(length, np.float32)
    buf[: mono.size] = mono
    out[offset : offset + 4 * length] = buf.tobytes()


def serve(plugin: str, sr: int, stdin, stdout) -> None:
    import dawdreamer as daw
    import numpy as np

    engine = daw.RenderEngine(sr, BLOCK)
    proc = engine.make_plugin_processor("amsynth", plugin)
    engine.load_graph([(proc, [])])
    n_params = proc.get_plugin_parameter_size()
    stdout.write((json.dumps({"ok": True, "params": n_params}) + "\n").encode())
    stdout.flush()
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        n, p = int(req["n"]), int(req["params"])
        raw = stdin.read(8 * n * p)
        if p != n_params or len(raw) != 8 * n * p:
            stdout.write((json.dumps({"ok": False, "error": "bad request"}) + "\n").encode())
            stdout.flush()
            continue
        vectors = np.frombuffer(raw, np.float64).reshape(n, p)
        length = round(float(req["duration"]) * sr)
        out = mmap.mmap(-1, max(1, 4 * n * length))  # shared with the children (MAP_SHARED)
        jobs = max(1, int(req.get("jobs", 1)))
        running: dict[int, int] = {}
        failed: list[int] = []
        for k in range(n):
            while len(running) >= jobs:
                pid, status = os.wait()
                if os.waitstatus_to_exitcode(status) != 0:
                    failed.append(running[pid])
                running.pop(pid, None)
            pid = os.fork()
            if pid == 0:  # the child: render one sound, write it into the shared buffer, leave
                code = 0
                try:
                    _render_child(
                        engine,
                        proc,
                        vectors[k],
                        req["notes"][k],
                        req["velocities"][k],
                        req["hold"],
                        req["duration"],
                        sr,
                        out,
                        4 * k * length,
                        length,
                    )
                except BaseException:  # reported through the exit status
                    code = 1
                os._exit(code)
            running[pid] = k
        while running:
            pid, status = os.wait()
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(running[pid])
            running.pop(pid, None)
        if failed:
            msg = {"ok": False, "error": f"amsynth failed to render item(s) {sorted(failed)}"}
            stdout.write((json.dumps(msg) + "\n").encode())
        else:
            stdout.write((json.dumps({"ok": True, "n": n, "length": length}) + "\n").encode())
            stdout.write(out[: 4 * n * length])
        stdout.flush()
        out.close()


def main(argv: list[str]) -> int:
    plugin, sr = argv[0], int(argv[1])
    # the protocol gets its own descriptor; whatever the plugin prints on fd 1 goes to stderr
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        serve(plugin, sr, sys.stdin.buffer, proto)
    except Exception as exc:  # the parent shows it
        proto.write((json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n").encode())
        proto.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
