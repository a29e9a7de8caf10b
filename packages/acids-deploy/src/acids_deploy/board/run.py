# ruff: noqa: UP031, UP004, T201, B905
"""acids bundle runner: runs the bundle's model on the board, with TensorRT or onnxruntime.

Backend (``--backend auto``): the TensorRT engine ``models/NAME.onnx.plan`` (built on this board by the
deploy agent) when the bundle's profile has TensorRT, the engine exists and ``import tensorrt`` works
(device memory through libcudart with ctypes); onnxruntime on the CPU otherwise, and the report says why.

Written for the oldest board Python (3.6): standard library + numpy + onnxruntime (or tensorrt) only, no
acids imports, no f-strings, no dataclasses. The bundle's ``site/`` folder (its dependencies, resolved for
this board) is put first on ``sys.path``.

    python3 run.py --smoke [--frames 8192] [--max-rtf 1.0]       # one buffer; prints JSON with the RTF
    python3 run.py --verify                                      # the engines against models/NAME.ref.npz
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


class IO(object):
    """One graph input or output: name, shape (None for a dynamic axis), numpy dtype, profile bounds."""

    def __init__(self, name, shape, dtype, bounds=None):
        self.name = name
        self.shape = list(shape)
        self.dtype = dtype
        self.bounds = bounds  # (min shape, max shape) of a TensorRT optimisation profile, or None


def make_feeds(inputs, frames, first=None):
    """Inputs for one buffer: the first input is noise (or ``first``), the others zeros (states).

    A dynamic time axis (the last) gets ``frames``, kept inside the engine's optimisation profile.
    """
    import numpy as np

    rng = np.random.RandomState(0)
    feeds = {}
    for i, inp in enumerate(inputs):
        shape = [d if d is not None else 1 for d in inp.shape]
        if shape and inp.shape[-1] is None:
            shape[-1] = frames
        if inp.bounds is not None:
            lo, hi = inp.bounds
            shape = [min(max(d, int(a)), int(b)) for d, a, b in zip(shape, lo, hi)]
        if i == 0 and first is not None:
            feeds[inp.name] = first.astype(inp.dtype)
        elif i == 0 and inp.dtype.startswith("float"):
            feeds[inp.name] = (0.1 * rng.standard_normal(shape)).astype(inp.dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=inp.dtype)
    return feeds


class OrtModel(object):
    """One ONNX model in an onnxruntime session (CPU)."""

    backend = "onnxruntime"

    def __init__(self, entry, threads):
        import onnxruntime as ort

        self.entry = entry
        self.sample_rate = int(entry.get("sample_rate") or 48000)
        self.version = ort.__version__
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        path = os.path.join(HERE, entry["path"])
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = [self._io(i) for i in self.session.get_inputs()]
        self.outputs = [self._io(o) for o in self.session.get_outputs()]

    @staticmethod
    def _io(arg):
        shape = [d if isinstance(d, int) and d > 0 else None for d in arg.shape]
        return IO(arg.name, shape, DTYPES.get(arg.type, "float32"))

    def feeds(self, frames, first=None):
        return make_feeds(self.inputs, frames, first)

    def run(self, feeds):
        return self.session.run(None, feeds)


def cuda_runtime():
    """The CUDA runtime library through ctypes: TensorRT's Python package allocates no device memory."""
    import ctypes
    import ctypes.util
    import glob

    names = [ctypes.util.find_library("cudart"), "libcudart.so"]
    for pattern in ("/usr/local/cuda*/lib64/libcudart.so*", "/usr/local/cuda*/targets/*/lib/libcudart.so*"):
        names += sorted(glob.glob(pattern), reverse=True)
    errors = []
    for name in names:
        if not name:
            continue
        try:
            return CudaRuntime(ctypes.CDLL(name))
        except (OSError, AttributeError) as e:
            errors.append(str(e))
    raise ImportError("no CUDA runtime library (libcudart.so): %s" % ("; ".join(errors[:2]) or "not found"))


class CudaRuntime(object):
    """cudaMalloc / cudaMemcpy / streams: the little of CUDA an engine's buffers need."""

    HOST_TO_DEVICE = 1
    DEVICE_TO_HOST = 2

    def __init__(self, lib):
        import ctypes

        self.ct = ctypes
        self.lib = lib
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        lib.cudaMalloc.argtypes = [ctypes.POINTER(vp), size]
        lib.cudaFree.argtypes = [vp]
        lib.cudaMemcpy.argtypes = [vp, vp, size, ctypes.c_int]
        lib.cudaStreamCreate.argtypes = [ctypes.POINTER(vp)]
        lib.cudaStreamSynchronize.argtypes = [vp]
        lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _check(self, code, what):
        if code != 0:
            raise RuntimeError("CUDA %s failed: %s" % (what, self.lib.cudaGetErrorString(code).decode()))

    def malloc(self, nbytes):
        ptr = self.ct.c_void_p()
        self._check(self.lib.cudaMalloc(self.ct.byref(ptr), max(1, int(nbytes))), "cudaMalloc")
        return ptr.value

    def free(self, ptr):
        self.lib.cudaFree(ptr)

    def to_device(self, ptr, array):
        self._check(self.lib.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, self.HOST_TO_DEVICE), "copy")

    def to_host(self, array, ptr):
        self._check(self.lib.cudaMemcpy(array.ctypes.data, ptr, array.nbytes, self.DEVICE_TO_HOST), "copy")

    def stream(self):
        s = self.ct.c_void_p()
        self._check(self.lib.cudaStreamCreate(self.ct.byref(s)), "cudaStreamCreate")
        return s.value or 0

    def sync(self, stream):
        self._check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


class TrtModel(object):
    """A TensorRT engine (the ``.plan`` built on this board) with the same interface as OrtModel.

    Works with the binding API of TensorRT 8.0-8.4 and the named-tensor API of 8.5+ (10.x has only that).
    """

    backend = "tensorrt"

    def __init__(self, entry, plan, cuda=None):
        import numpy as np
        import tensorrt as trt

        self.entry = entry
        self.sample_rate = int(entry.get("sample_rate") or 48000)
        self.version = str(trt.__version__)
        self.trt = trt
        self.cuda = cuda if cuda is not None else cuda_runtime()
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(plan, "rb") as f:
            data = f.read()
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError(
                "TensorRT %s cannot load %s (built by another TensorRT version or GPU?)"
                % (self.version, os.path.basename(plan))
            )
        self.context = self.engine.create_execution_context()
        self.named = hasattr(self.engine, "num_io_tensors")
        engine = self.engine
        self.io = []
        count = engine.num_io_tensors if self.named else engine.num_bindings
        for i in range(count):
            if self.named:
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape, dtype = engine.get_tensor_shape(name), engine.get_tensor_dtype(name)
            else:
                name = engine.get_binding_name(i)
                is_input = engine.binding_is_input(i)
                shape, dtype = engine.get_binding_shape(i), engine.get_binding_dtype(i)
            shape = [int(d) if int(d) >= 0 else None for d in shape]
            io = IO(name, shape, np.dtype(trt.nptype(dtype)).name)
            if is_input and None in shape:
                io.bounds = self._profile(i, name)
            self.io.append((io, is_input))
        self.inputs = [io for io, is_in in self.io if is_in]
        self.outputs = [io for io, is_in in self.io if not is_in]
        self.buffers = {}
        self.stream = self.cuda.stream() if self.named else 0

    def _profile(self, index, name):
        try:
            if self.named:
                lo, _opt, hi = self.engine.get_tensor_profile_shape(name, 0)
            else:
                lo, _opt, hi = self.engine.get_profile_shape(0, index)
            return list(lo), list(hi)
        except Exception:  # no profile query in this TensorRT: use the shapes as given
            return None

    def feeds(self, frames, first=None):
        return make_feeds(self.inputs, frames, first)

    def _buffer(self, name, nbytes):
        ptr, size = self.buffers.get(name, (None, 0))
        if ptr is None or size < nbytes:
            if ptr is not None:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def run(self, feeds):
        import numpy as np

        for i, (io, is_input) in enumerate(self.io):
            if not is_input:
                continue
            array = np.ascontiguousarray(feeds[io.name], dtype=io.dtype)
            if self.named:
                self.context.set_input_shape(io.name, tuple(array.shape))
            else:
                self.context.set_binding_shape(i, tuple(array.shape))
            self.cuda.to_device(self._buffer(io.name, array.nbytes), array)
        outputs = []
        for i, (io, is_input) in enumerate(self.io):
            if is_input:
                continue
            if self.named:
                shape = self.context.get_tensor_shape(io.name)
            else:
                shape = self.context.get_binding_shape(i)
            array = np.empty(tuple(int(d) for d in shape), dtype=io.dtype)
            self._buffer(io.name, array.nbytes)
            outputs.append((io.name, array))
        if self.named:
            for io, _ in self.io:
                self.context.set_tensor_address(io.name, self.buffers[io.name][0])
            ok = self.context.execute_async_v3(self.stream)
            self.cuda.sync(self.stream)
        else:
            ok = self.context.execute_v2([self.buffers[io.name][0] for io, _ in self.io])
        if ok is False:
            raise RuntimeError("TensorRT failed to run the engine")
        for name, array in outputs:
            self.cuda.to_host(array, self.buffers[name][0])
        return [array for _, array in outputs]


def load_model(manifest, entry, backend="auto", threads=0):
    """The TensorRT engine where the profile says TensorRT, the engine was built and ``tensorrt``
    imports; onnxruntime otherwise (``fallback`` says why). ``backend`` forces one of them."""
    why = None
    if backend in ("auto", "tensorrt"):
        plan = os.path.join(HERE, entry["path"] + ".plan")
        if not manifest.get("tensorrt"):
            why = "the bundle's profile has no TensorRT"
        elif not os.path.exists(plan):
            why = "no TensorRT engine built for %s on this board" % entry["path"]
        else:
            try:
                import tensorrt  # noqa: F401

                cuda = cuda_runtime()
            except ImportError as e:
                why = "tensorrt does not import here: %s" % e
            else:
                return TrtModel(entry, plan, cuda)  # the engine exists: a failure to load it is an error
        if backend == "tensorrt":
            raise RuntimeError("the TensorRT backend is not available: %s" % why)
    model = OrtModel(entry, threads)
    model.fallback = why
    return model


def audio_seconds(model, feeds, outputs):
    first_in = feeds[model.inputs[0].name]
    length = max(first_in.shape[-1] if first_in.ndim else 1, outputs[0].shape[-1] if outputs[0].ndim else 1)
    return float(length) / model.sample_rate


def _versions():
    out = {}
    for name in ("numpy", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def smoke(args):
    import numpy as np

    manifest = load_manifest()
    results = []
    ok = True
    for entry in pick_models(manifest, args.model):
        res = {"model": entry["name"]}
        try:
            t0 = time.time()
            model = load_model(manifest, entry, args.backend, args.threads)
            res["load_s"] = round(time.time() - t0, 4)
            res["backend"] = model.backend
            res[model.backend] = model.version
            if getattr(model, "fallback", None):
                res["fallback"] = model.fallback
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
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    report.update(_versions())
    if not results:
        report["error"] = "no ONNX model in this bundle"
    print(json.dumps(report))
    return 0 if ok else EXIT_FAILED


def verify_one(manifest, entry):
    """Run the references (every call's recorded inputs) through this board's engine and compare."""
    import numpy as np

    ref = entry["reference"]
    res = {"model": entry["name"], "reference": ref["path"], "atol": ref["atol"], "rtol": ref["rtol"]}
    plan = os.path.join(HERE, entry["path"] + ".plan")
    if not manifest.get("tensorrt"):
        return dict(res, status="not verified", reason="the bundle's profile has no TensorRT")
    if not os.path.exists(plan):
        return dict(res, status="not verified", reason="no TensorRT engine was built on this board")
    try:
        import tensorrt  # noqa: F401

        cuda = cuda_runtime()
    except ImportError as e:
        reason = "tensorrt does not import with %s (%s)" % (sys.executable, e)
        return dict(res, status="not verified", reason=reason)
    try:
        model = TrtModel(entry, plan, cuda)
        res["tensorrt"] = model.version
        refs = np.load(os.path.join(HERE, ref["path"]))
        names = [o.name for o in model.outputs]
        compared = [n for n in names if n in refs.files]
        if not compared:
            return dict(res, status="failed", error="the references hold none of the engine's outputs")
        worst, where, over = 0.0, None, False
        for k in range(refs[model.inputs[0].name].shape[0]):
            outs = model.run(dict((i.name, refs[i.name][k]) for i in model.inputs))
            for name, got in zip(names, outs):
                if name not in compared:
                    continue
                want = refs[name][k].astype("float64")
                diff = np.abs(got.astype("float64") - want)
                if diff.size and float(diff.max()) > worst:
                    worst, where = float(diff.max()), "%s (call %d)" % (name, k)
                over = over or bool(np.any(diff > ref["atol"] + ref["rtol"] * np.abs(want)))
    except Exception as e:
        return dict(res, status="failed", error="%s: %s" % (type(e).__name__, e))
    res.update(max_abs_error=worst, worst=where, calls=int(refs[model.inputs[0].name].shape[0]))
    if over:
        res["status"] = "failed"
        res["error"] = "engine differs from the references: max |error| %.3g at %s (atol %g, rtol %g)" % (
            worst, where, ref["atol"], ref["rtol"])  # fmt: skip
    else:
        res["status"] = "verified"
    return res


def verify(args):
    """Compare each engine with its reference npz; prints JSON; exit 3 when one differs or fails."""
    manifest = load_manifest()
    results = [verify_one(manifest, e) for e in pick_models(manifest, args.model) if e.get("reference")]
    ok = all(r["status"] != "failed" for r in results)
    print(json.dumps({"ok": ok, "models": results, "python": platform.python_version()}))
    return 0 if ok else EXIT_FAILED


class Stream(object):
    """Audio through a model: blocks of its fixed time axis (the last one zero-padded) when it has one,
    and the ``state_out.*`` outputs fed back as ``state_in.*`` from one call to the next."""

    def __init__(self, model):
        self.model = model
        self.block = model.inputs[0].shape[-1] if model.inputs[0].shape else None
        self.state = {}
        self.out_names = [o.name for o in model.outputs]
        self.in_names = set(i.name for i in model.inputs)

    def _call(self, x):
        feeds = self.model.feeds(x.shape[-1], first=x)
        feeds.update(self.state)
        outs = self.model.run(feeds)
        self.state = {}
        for name, value in zip(self.out_names, outs):
            back = name.replace("state_out", "state_in", 1)
            if name.startswith("state_out") and back in self.in_names:
                self.state[back] = value
        return outs[0]

    def process(self, x):
        """(1, C, T) -> the first output, (1, C', T')."""
        import numpy as np

        if self.block is None or x.shape[-1] == self.block:
            return self._call(x)
        pieces = []
        for start in range(0, x.shape[-1], self.block):
            chunk = x[..., start : start + self.block]
            valid = chunk.shape[-1]
            if valid < self.block:
                pad = np.zeros((*chunk.shape[:-1], self.block - valid), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad], axis=-1)
            y = self._call(chunk)
            pieces.append(y[..., : round(y.shape[-1] * float(valid) / self.block)])
        return np.concatenate(pieces, axis=-1)


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
    manifest = load_manifest()
    entry = pick_models(manifest, args.model)[0]
    model = load_model(manifest, entry, args.backend, args.threads)
    audio, rate = read_wav(args.wav)
    if rate != model.sample_rate:
        raise SystemExit("%s is %d Hz; the model wants %d Hz" % (args.wav, rate, model.sample_rate))
    t0 = time.time()
    y = Stream(model).process(audio[None])
    compute = time.time() - t0
    write_wav(args.out, y.reshape(-1, y.shape[-1]), rate)
    seconds = float(audio.shape[-1]) / rate
    report = {"ok": True, "out": args.out, "audio_s": seconds, "rtf": compute / max(seconds, 1e-9)}
    report["backend"] = model.backend
    print(json.dumps(report))
    return 0


def process_stdin(args):
    import numpy as np

    manifest = load_manifest()
    entry = pick_models(manifest, args.model)[0]
    model = load_model(manifest, entry, args.backend, args.threads)
    stream = Stream(model)
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
        out = stream.process(block)
        compute += time.time() - t0
        frames += block.shape[-1]
        dst.write(np.ascontiguousarray(out.reshape(-1, out.shape[-1]).T).astype("<f4").tobytes())
        dst.flush()
    seconds = float(frames) / model.sample_rate
    rtf = compute / max(seconds, 1e-9)
    sys.stderr.write("run.py: %s, %d frames, RTF %.4f\n" % (model.backend, frames, rtf))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="Run the bundle's model on this board.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="run one buffer, print a JSON report")
    mode.add_argument("--wav", help="process a 16-bit WAV file (with --out)")
    mode.add_argument("--stdin", action="store_true", help="float32 PCM on stdin -> float32 PCM on stdout")
    mode.add_argument(
        "--verify", action="store_true", help="compare the TensorRT engines with the bundle's references"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "tensorrt", "onnxruntime"),
        default="auto",
        help="auto: the TensorRT engine where the profile has TensorRT, it was built and tensorrt imports",
    )
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
        if args.verify:
            return verify(args)
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
