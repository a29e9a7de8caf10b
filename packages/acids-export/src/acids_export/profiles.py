"""Board profiles: the ONNX opset, IR version and operator table each target runtime accepts.

Sources: reference/deploy-and-export.md §1 (runtimes per board, onnx-tensorrt ``docs/operators.md`` per
TensorRT branch). ``ops`` is ``None`` where every standard operator of the opset runs (onnxruntime on the
host and the Pi); for TensorRT targets it is an allow-list of operators the parser of that version takes
(the common audio-model subset: anything else is refused until verified and added here), and ``denied``
names the ones the tables mark unsupported, with the reason printed on refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Operators TensorRT's ONNX parser imports in 8.2 and later (onnx-tensorrt operators.md, 8.2-GA..10.x);
# the subset convolutional/recurrent audio models produce. Conv/ConvTranspose 1D are expanded to 2D by the
# 8.2 parser (builtin_op_importers.cpp), so they are allowed.
_TRT_COMMON = frozenset(
    """Abs Acos Add And ArgMax ArgMin Asin Atan AveragePool BatchNormalization Cast Ceil Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Elu Equal Erf Exp Expand Flatten Floor GRU
    Gather GatherElements Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual HardSigmoid Identity
    InstanceNormalization LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mul
    Neg Not Or PRelu Pad Pow RNN Range Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ScatterElements Selu Shape Sigmoid
    Sign Sin Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh Tile TopK
    Transpose Unsqueeze Where Xor""".split()
)
_NO_FFT = {
    "STFT": "no TensorRT parser up to 10.x imports STFT; export with the DFT-by-convolution substitute",
    "DFT": "no Jetson TensorRT imports DFT (only TRT >= 11.2 via a plugin)",
    "HannWindow": "unsupported by TensorRT's parser",
    "HammingWindow": "unsupported by TensorRT's parser",
    "BlackmanWindow": "unsupported by TensorRT's parser",
    "MelWeightMatrix": "unsupported by TensorRT's parser",
}


@dataclass(frozen=True)
class Profile:
    """One deployment target."""

    name: str
    runtime: str
    opset: int
    ir_version: int
    buffer: int = 2048
    tensorrt: str | None = None
    ops: frozenset[str] | None = None
    denied: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def op_problem(self, op: str, domain: str = "") -> str | None:
        """Why ``op`` breaks this profile, or None."""
        if domain not in ("", "ai.onnx"):
            return f"operator {domain}::{op} is outside the standard ONNX domain"
        if op in self.denied:
            return f"operator {op}: {self.denied[op]}"
        if self.ops is not None and op not in self.ops:
            return f"operator {op} is not in the {self.name} operator table (TensorRT {self.tensorrt})"
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "runtime": self.runtime,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "buffer": self.buffer,
            "tensorrt": self.tensorrt,
        }


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("desktop", "onnxruntime >= 1.16 (x86_64/arm64)", opset=17, ir_version=8),
        Profile(
            "rpi-bookworm",
            "onnxruntime 1.32 aarch64, Python 3.11 (Raspberry Pi OS 12)",
            opset=17,
            ir_version=8,
            notes="no GPU; ORT CPU gains nothing from fp16",
        ),
        Profile(
            "jetson-jp4",
            "onnxruntime 1.10 (Python 3.6) / TensorRT 8.0-8.2 (JetPack 4.6, Nano)",
            opset=13,
            ir_version=7,
            tensorrt="8.2",
            ops=_TRT_COMMON,
            denied={
                **_NO_FFT,
                "Mod": "unsupported by TensorRT 8.2's parser",
                "NonZero": "unsupported by TensorRT 8.2's parser",
                "LayerNormalization": "not in opset 13 nor TensorRT 8.2",
            },
            notes="ORT 1.10 reads IR <= 8; TRT 8.2 parses opset <= 13",
        ),
        Profile(
            "jetson-jp5",
            "onnxruntime 1.19 (Python 3.8) / TensorRT 8.5 (JetPack 5.1)",
            opset=17,
            ir_version=8,
            tensorrt="8.5",
            ops=_TRT_COMMON,
            denied={**_NO_FFT, "LayerNormalization": "unsupported by TensorRT 8.5's parser"},
        ),
        Profile(
            "jetson-jp6",
            "onnxruntime 1.23 (Python 3.10) / TensorRT 8.6 (JP 6.0) or 10.3 (JP 6.1/6.2)",
            opset=17,
            ir_version=8,
            tensorrt="8.6",
            ops=_TRT_COMMON | {"LayerNormalization"},
            denied=dict(_NO_FFT),
        ),
    )
}


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile '{name}' (known: {', '.join(PROFILES)})") from None
