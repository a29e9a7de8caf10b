# ruff: noqa: UP031, UP004, T201
"""acids bundle runner: runs the bundle's ONNX model with numpy + onnxruntime on the board.

Written for the oldest board Python (3.6): standard library + numpy + onnxruntime only, no acids imports,
no f-strings, no dataclasses. The bundle's ``site/`` folder (its dependencies, resolved for this board)
is put first on ``sys.path``.

    python3 run.py --smoke [--frames 8192] [--max-rtf 1.0]       # one buffer; prints JSON with the RTF
    python3 run.py --wav in.wav --out out.wav                    # audio -> audio models
    arecord -t raw -f FLOAT_LE -r 48000 | python3 run.py --stdin | aplay -t raw -f FLOAT_LE -r 48000

Real-time factor (RTF) = compute time / audio duration; below 1 keeps up with real time. The audio
duration of a buffer is the longer time axis of the model's first input and first output (a decoder's
output, an encoder's input) at the model's sample rate.
"""

import argparse
import json
import os
import platform
import sys
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(HERE, "site")
if os.path.isdir(SITE):
    sys.path.insert(0, SITE)

EXIT_FAILED = 3
DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def load_manifest():
    with open(os.path.join(HERE, "manifest.json")) as f:
        return json.load(f)


def pick_models(manifest, name):
    models = [m for m in manifest.get("models", []) if m.get("format") in ("onnx", "tensorrt-onnx")]
    if name:
        models = [m for m in models if m["name"] == name or m["path"] == name]
        if not models:
            raise SystemExit("no ONNX model %r in this bundle" % name)
    return models


class Model(object):
    """One ONNX model in an onnxruntime session."""

    def __init__(self, entry, threads):
        import onnxruntime as ort

        self.entry = entry
        self.sample_rate = int(entry.get("sample_rate") or 48000)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        path = os.path.join(HERE, entry["path"])
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()

    def feeds(self, frames, first=None):
        """Inputs for one buffer: the first input is noise (or ``first``), the others zeros (states)."""
        import numpy as np

        rng = np.random.RandomState(0)
        feeds = {}
        for i, inp in enumerate(self.inputs):
            dtype = DTYPES.get(inp.type, "float32")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            if shape and not (isinstance(inp.shape[-1], int) and inp.shape[-1] > 0):
                shape[-1] = frames  # the dynamic time axis
            if i == 0 and first is not None:
                feeds[inp.name] = first.astype(dtype)
            elif i == 0 and dtype.startswith("float"):
                feeds[inp.name] = (0.1 * rng.standard_normal(shape)).astype(dtype)
            else:
                feeds[inp.name] = np.zeros(shape, dtype=dtype)
        return feeds

    def run(self, feeds):
        return self.session.run(None, feeds)


def audio_seconds(model, feeds, outputs):
    first_in = feeds[model.inputs[0].name]
    length = max(first_in.shape[-1] if first_in.ndim else 1, outputs[0].shape[-1] if outputs[0].ndim else 1)
    return float(length) / model.sample_rate


def smoke(args):
    import numpy as np
    import onnxruntime as ort

    manifest = load_manifest()
    results = []
    ok = True
    for entry in pick_models(manifest, args.model):
        res = {"model": entry["name"]}
        try:
            t0 = time.time()
            model = Model(entry, args.threads)
            res["load_s"] = round(time.time() - t0, 4)
            feeds = model.feeds(args.frames)
            outputs = model.run(feeds)  # warm-up
            times = []
            for _ in range(max(1, args.repeat)):
                t0 = time.time()
                outputs = model.run(feeds)
                times.append(time.time() - t0)
            times.sort()
            compute = times[len(times) // 2]
            seconds = audio_seconds(model, feeds, outputs)
            res["audio_s"] = round(seconds, 6)
            res["latency_ms"] = round(1000.0 * compute, 3)
            res["rtf"] = round(compute / seconds, 6) if seconds > 0 else None
            res["outputs"] = [list(o.shape) for o in outputs]
            bad = [model.outputs[i].name for i, o in enumerate(outputs) if not np.all(np.isfinite(o))]
            if bad:
                res["error"] = "output not finite (NaN or Inf): %s" % ", ".join(bad)
            elif args.max_rtf and res["rtf"] is not None and res["rtf"] > args.max_rtf:
                res["error"] = "too slow: RTF %.3f > %.3f" % (res["rtf"], args.max_rtf)
        except Exception as e:  # any failure of the model on this board fails the smoke test
            res["error"] = "%s: %s" % (type(e).__name__, e)
        ok = ok and "error" not in res
        results.append(res)
    if not results:
        ok = False
    report = {
        "ok": ok,
        "models": results,
        "rtf": max([r.get("rtf") or 0.0 for r in results] or [0.0]),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if not results:
        report["error"] = "no ONNX model in this bundle"
    print(json.dumps(report))
    return 0 if ok else EXIT_FAILED


def read_wav(path):
    import numpy as np

    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit("only 16-bit PCM WAV is supported, not %d-byte samples" % w.getsampwidth())
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (data.reshape(-1, channels).T.astype("float32") / 32768.0), rate


def write_wav(path, audio, rate):
    import numpy as np

    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").T
    with wave.open(path, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def process_wav(args):
    entry = pick_models(load_manifest(), args.model)[0]
    model = Model(entry, args.threads)
    audio, rate = read_wav(args.wav)
    if rate != model.sample_rate:
        raise SystemExit("%s is %d Hz; the model wants %d Hz" % (args.wav, rate, model.sample_rate))
    t0 = time.time()
    outputs = model.run(model.feeds(audio.shape[-1], first=audio[None]))
    compute = time.time() - t0
    out = outputs[0].reshape(-1, outputs[0].shape[-1])
    write_wav(args.out, out, rate)
    seconds = float(audio.shape[-1]) / rate
    print(json.dumps({"ok": True, "out": args.out, "audio_s": seconds, "rtf": compute / max(seconds, 1e-9)}))
    return 0


def process_stdin(args):
    import numpy as np

    entry = pick_models(load_manifest(), args.model)[0]
    model = Model(entry, args.threads)
    block_bytes = 4 * args.channels * args.block
    src = getattr(sys.stdin, "buffer", sys.stdin)
    dst = getattr(sys.stdout, "buffer", sys.stdout)
    compute = 0.0
    frames = 0
    while True:
        data = src.read(block_bytes)
        if not data:
            break
        data = data[: len(data) - len(data) % (4 * args.channels)]
        block = np.frombuffer(data, dtype="<f4").reshape(-1, args.channels).T[None]
        t0 = time.time()
        out = model.run(model.feeds(block.shape[-1], first=block))[0]
        compute += time.time() - t0
        frames += block.shape[-1]
        dst.write(np.ascontiguousarray(out.reshape(-1, out.shape[-1]).T).astype("<f4").tobytes())
        dst.flush()
    seconds = float(frames) / model.sample_rate
    sys.stderr.write("run.py: %d frames, RTF %.4f\n" % (frames, compute / max(seconds, 1e-9)))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="Run the bundle's model on this board.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="run one buffer, print a JSON report")
    mode.add_argument("--wav", help="process a 16-bit WAV file (with --out)")
    mode.add_argument("--stdin", action="store_true", help="float32 PCM on stdin -> float32 PCM on stdout")
    p.add_argument("--out", help="output WAV for --wav")
    p.add_argument("--model", help="model name or path in the bundle (default: the first ONNX model)")
    p.add_argument("--frames", type=int, default=8192, help="time steps of the smoke buffer")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the smoke buffer (median)")
    p.add_argument("--max-rtf", type=float, default=None, help="fail the smoke test above this RTF")
    p.add_argument("--block", type=int, default=4096, help="frames per block for --stdin")
    p.add_argument("--channels", type=int, default=1, help="interleaved channels for --stdin")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    args = p.parse_args(argv)
    try:
        if args.smoke:
            return smoke(args)
        if args.wav:
            if not args.out:
                p.error("--wav needs --out")
            return process_wav(args)
        return process_stdin(args)
    except ImportError as e:
        print(json.dumps({"ok": False, "error": "missing dependency on this board: %s" % e}))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
