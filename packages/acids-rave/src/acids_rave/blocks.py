"""Convolution blocks that stream: state lives in per-module buffers, switched by an explicit flag.

Every convolution pads through a :class:`CachedPad`. Offline it pads with zeros (causal: all on the
left; otherwise centred). With ``streaming = True`` (set by :func:`set_streaming` on a whole model) the
left context is the tail of the previous call instead, so feeding a signal block by block gives exactly
the offline output, for any block length that is a multiple of the module's total stride. The caches
are not part of the state dict (checkpoints never depend on them) and are sized to the batch on the
fly. There is no global switch: two models in one process can stream and not stream independently.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

#: interpolation points of the Winograd / Toom-Cook transforms (plus the point at infinity), in the
#: order they are used: small magnitudes first keep the transforms' float32 rounding small
_WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)


@cache
def _winograd_matrices_f64(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    alpha = m + r - 1
    if m < 1 or r < 2 or alpha - 1 > len(_WINOGRAD_POINTS):
        raise ValueError(f"no Winograd transform F({m}, {r}) (needs m >= 1, 2 <= r, m + r <= 10)")
    pts = _WINOGRAD_POINTS[: alpha - 1]
    a = torch.zeros(alpha, m, dtype=torch.float64)
    g = torch.zeros(alpha, r, dtype=torch.float64)
    for i, p in enumerate(pts):
        f = math.prod(p - q for k, q in enumerate(pts) if k != i)
        a[i] = torch.tensor([p**j for j in range(m)], dtype=torch.float64)
        g[i] = torch.tensor([p**j / f for j in range(r)], dtype=torch.float64)
    a[-1, -1] = 1.0
    g[-1, -1] = 1.0
    at = a.T.contiguous()
    # the data transform solves AT diag(G g) BT d = correlation(d, g) for every d, g:
    # sum_k AT[i, k] G[k, j] BT[k, l] = [l == i + j]
    lhs = torch.stack([at[i] * g[:, j] for i in range(m) for j in range(r)])
    rhs = torch.zeros(m * r, alpha, dtype=torch.float64)
    for i in range(m):
        for j in range(r):
            rhs[i * r + j, i + j] = 1.0
    bt = torch.linalg.lstsq(lhs, rhs).solution
    if not torch.allclose(lhs @ bt, rhs, atol=1e-9):
        raise ArithmeticError(f"Winograd F({m}, {r}) transform did not solve")
    return at, g, bt


def winograd_matrices(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transforms (AT (m, a), G (a, r), BT (a, a)), a = m + r - 1, of the minimal filter F(m, r).

    ``AT @ ((G @ g) * (BT @ d))`` is the correlation ``y[i] = sum_j g[j] d[i + j]`` (i < m) of a
    length-``a`` input tile ``d`` with an ``r``-tap filter ``g``: ``a`` multiplications for ``m``
    outputs instead of ``m * r``. Toom-Cook construction on the points 0, ±1, ±2, ±1/2, ... and infinity.
    """
    at, g, bt = _winograd_matrices_f64(m, r)
    return at.float(), g.float(), bt.float()


def winograd_conv1d(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor,
    at: torch.Tensor,
    bt: torch.Tensor,
    kernel_size: int,
    dilation: int,
) -> torch.Tensor:
    """``F.conv1d(x, w, bias, dilation=dilation)`` of an already padded ``x`` (B, C, T + d (k - 1)),
    as the Winograd minimal filter F(m, k): ``u = G w`` is the transformed weight (a, C_out, C_in).

    The ``d`` interleaved phases of a dilated convolution are each an undilated one: time is viewed as
    (T / d, d), tiles of ``m`` outputs run along T / d with the phase innermost. One data transform
    (a small matrix product over the tile), one batched product (a, C_out, C_in) @ (a, C_in, N) and one
    output transform; plain differentiable ops, so autograd gives the backward.
    """
    b, c, tp = x.shape
    alpha, cout = u.shape[0], u.shape[1]
    m = alpha - kernel_size + 1
    d = dilation
    t = tp - d * (kernel_size - 1)
    nt = (t + m * d - 1) // (m * d)  # tiles per phase
    need = (nt * m + kernel_size - 1) * d
    if need > tp:
        x = F.pad(x, (0, need - tp))
    tiles = x.reshape(b, c, need // d, d).unfold(2, alpha, m)  # (B, C, nt, d, a), a view
    v = torch.einsum("kl,bcntl->kcbnt", bt, tiles).reshape(alpha, c, b * nt * d)
    prod = torch.bmm(u, v).reshape(alpha, cout, b, nt, d)
    y = torch.einsum("ik,kobnt->bonit", at, prod).reshape(b, cout, nt * m * d)
    if nt * m * d != t:
        y = y[:, :, :t]
    return y + bias.unsqueeze(-1)


class CachedPad(nn.Module):
    """Pad (B, C, T) on time by ``left``/``right`` zeros, or by the cached past when streaming."""

    def __init__(self, left: int, right: int = 0):
        super().__init__()
        if left < 0 or right < 0:
            raise ValueError("padding must be >= 0")
        self.left = left
        self.right = right
        self.streaming = False
        self.register_buffer("cache", torch.zeros(0), persistent=False)

    def set_streaming(self, flag: bool) -> None:
        if flag and self.right:
            raise ValueError("a non-causal layer cannot stream (its config has causal = false)")
        self.streaming = flag
        self.cache = torch.zeros(0, device=self.cache.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            if self.left == 0 and self.right == 0:
                return x
            if self.right == 0 and not torch.jit.is_tracing():
                # causal: a cat with a small zero block writes the output once (F.pad fills all of it
                # with zeros first, then copies); traced graphs (ONNX) keep their single Pad node
                zeros = torch.zeros(x.shape[0], x.shape[1], self.left, dtype=x.dtype, device=x.device)
                return torch.cat([zeros, x], -1)
            return F.pad(x, (self.left, self.right))
        if self.left == 0:
            return x
        if self.cache.dim() != 3 or self.cache.shape[0] != x.shape[0] or self.cache.shape[1] != x.shape[1]:
            self.cache = torch.zeros(x.shape[0], x.shape[1], self.left, dtype=x.dtype, device=x.device)
        x = torch.cat([self.cache, x], -1)
        self.cache = x[:, :, x.shape[-1] - self.left :]
        return x


def set_streaming(module: nn.Module, flag: bool) -> None:
    """Switch every :class:`CachedPad` under ``module`` to streaming (fresh, zero state) or offline.

    Streaming also switches :class:`Conv1d` to its matrix-product path (see :meth:`Conv1d.forward`).
    """
    for m in module.modules():
        if isinstance(m, CachedPad):
            m.set_streaming(flag)
        elif isinstance(m, Conv1d):
            m.gemm = flag
        elif m is not module and callable(getattr(m, "set_streaming", None)):
            m.set_streaming(flag)  # other stateful layers (the noise generator's table position)


class Conv1d(nn.Module):
    """1-d convolution with its own padding (causal or centred), optional weight normalisation.

    Output length is ``T / stride`` for any input length ``T`` that is a multiple of ``stride``.
    Weight normalisation is kept as (direction, gain) parameters computed in ``forward`` (scriptable,
    no hooks); :meth:`fuse` folds it into a plain weight for inference.

    Offline and in training, the kernel-3 layers where it measured faster run as the Winograd minimal
    filter F(6, 3) (:func:`winograd_conv1d`: 8 channel products per 6 outputs instead of 18); see
    :meth:`_winograd_on` for the rule. Streaming, traced graphs and bfloat16 weights keep their paths.
    """

    __jit_ignored_attributes__ = ["_winograd_cache"]
    __constants__ = ["two_row_min_weights", "two_row_block"]
    #: streaming products of two frames with at least this many weights go through :func:`_two_row_product`,
    #: in blocks of about this many weights (1 MB of float32)
    two_row_min_weights = 100_000
    two_row_block = 262_144

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        causal: bool = True,
        weight_norm: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("channels must be divisible by groups")
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        weight = torch.empty(out_channels, in_channels // groups, kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        fan_in = in_channels // groups * kernel_size
        bound = 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        self.weight_norm = weight_norm
        self.gain = nn.Parameter(
            torch.linalg.vector_norm(weight, dim=(1, 2), keepdim=True), requires_grad=weight_norm
        )
        total = dilation * (kernel_size - 1) + 1 - stride
        if total < 0:
            raise ValueError("kernel span shorter than the stride")
        left = total if causal else total // 2
        self.pad = CachedPad(left, total - left)
        self.kernel_size = kernel_size
        #: compute as one matrix product over (channel, tap) columns instead of F.conv1d; set while
        #: streaming, where blocks are a few frames long and the convolution library's per-call set-up
        #: (and the re-layout of the whole weight) costs more than the arithmetic
        self.gemm = False
        #: Winograd tile m (F(m, kernel_size)) where this layer's shape measured faster, else 0 (set 0
        #: to switch it off); used on calls of at most ``winograd_frames`` output frames (B x T_out)
        self.winograd, self.winograd_frames = self._winograd_rule(in_channels, kernel_size, stride, groups)
        if self.winograd:
            at, g, bt = winograd_matrices(self.winograd, kernel_size)
        else:
            at = g = bt = torch.zeros(0)
        # transforms are fixed functions of the shape: non-persistent (state dicts are unchanged)
        self.register_buffer("winograd_at", at, persistent=False)
        self.register_buffer("winograd_g", g, persistent=False)
        self.register_buffer("winograd_bt", bt, persistent=False)
        self._winograd_cache: tuple[tuple[int, int, int], torch.Tensor] | None = None

    @staticmethod
    def _winograd_rule(in_channels: int, kernel_size: int, stride: int, groups: int) -> tuple[int, int]:
        """Static half of the rule: (tile m, most B x T_out frames per call), (0, 0) for off.

        F(6, 3) for kernel-3, stride-1, ungrouped layers: up to 32768 frames at >= 384 input channels,
        up to 4096 at 192-383; the convolution library elsewhere. See :meth:`_winograd_on`.
        """
        if kernel_size != 3 or stride != 1 or groups != 1 or in_channels < 192:
            return 0, 0
        return 6, (32768 if in_channels >= 384 else 4096)

    def _winograd_on(self, x: torch.Tensor, w_dtype: torch.dtype) -> bool:
        """Run this call through Winograd F(6, 3)? (``x`` padded.) The measured rule, with the static
        half in :meth:`_winograd_rule`: >= 384 input channels and B x T_out <= 32768 frames, or >= 192
        channels and <= 4096 frames; at least two tiles per phase.

        Measured (1 thread, this EPYC Zen 4, per layer, against F.conv1d): forward 1.2-1.5x faster at
        384-768 channels inside the fused v2 model offline (B = 1, T_out 432-1728) and 0.95-1.7x alone
        up to 10368 frames; forward + backward at the training shapes (B = 4 x 4096 band frames,
        weight norm on) 0.96-1.34x at 384-768 channels and 1.04-1.26x at 192 channels (4 x 1024). Even
        or slower at 192 channels beyond ~4096 frames (0.8-1.2x inside the model offline at 6912,
        0.92-0.96x alone at 8 x 2048) and at 96 channels (0.55-0.95x), where oneDNN runs at its best
        and the transforms' memory traffic costs more than the saved products. The frame caps also
        bound the transforms' buffers (about 2.7x the layer's input and output). F(2, 3) and F(4, 3)
        measured slower than F(6, 3) on (most of) these shapes; k = 2 (Upsample) and strided layers
        (polyphase F(m, 2)) are not used (README, performance). Streaming (``gemm``), traced graphs
        (ONNX), ``torch.export`` / ``torch.compile`` graphs and bfloat16 weights keep their paths.
        """
        if not torch.jit.is_scripting() and torch.compiler.is_compiling():
            return False  # torch.export / torch.compile graphs keep the convolution (no shape guards)
        frames = x.shape[-1] - self.dilation * (self.kernel_size - 1)
        return (
            self.winograd > 0
            and not torch.jit.is_tracing()
            and w_dtype == x.dtype
            and x.shape[0] * frames <= self.winograd_frames
            and frames >= 2 * self.winograd * self.dilation
        )

    def winograd_weight(self) -> torch.Tensor:
        """The transformed weight G w (a, C_out, C_in) of the Winograd path.

        Computed from the effective weight on every call where gradients are on (autograd goes through
        it); without gradients on a fused layer (no weight norm: inference after :meth:`fuse`) it is
        cached until the weight changes in place (a state-dict load, an optimiser step) or moves: the
        cache is keyed on the weight's storage and version counter.
        """
        if torch.jit.is_scripting() or self.weight_norm or torch.is_grad_enabled():
            return self._winograd_transform(self.effective_weight())
        return self._cached_winograd_weight()

    def _winograd_transform(self, w: torch.Tensor) -> torch.Tensor:
        g = self.winograd_g.to(w.dtype)
        return torch.einsum("kj,ocj->koc", g, w).contiguous()

    @torch.jit.unused
    def _cached_winograd_weight(self) -> torch.Tensor:
        w = self.weight
        if torch.is_inference(w):  # made under inference_mode: no version counter to key a cache on
            return self._winograd_transform(w)
        key = (w.data_ptr(), w._version, self.winograd_g.data_ptr())
        if self._winograd_cache is None or self._winograd_cache[0] != key:
            self._winograd_cache = (key, self._winograd_transform(w.detach()))
        return self._winograd_cache[1]

    def effective_weight(self) -> torch.Tensor:
        if self.weight_norm:
            # weight * gain / ||weight|| (norm over all dims but the output channel) as one native op:
            # its fused backward is ~3x cheaper than autograd through norm, divide and multiply
            return torch._weight_norm(self.weight, self.gain, 0)
        return self.weight

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the weight normalisation into the weight (same output, cheaper)."""
        if self.weight_norm:
            self.weight.copy_(self.effective_weight())
            self.weight_norm = False
            self.gain.requires_grad_(False)

    @torch.no_grad()
    def to_bfloat16(self) -> None:
        """Inference only: fold weight norm and keep the weight in bfloat16 (half the bytes to read).

        Inputs stay float32: each product casts its input to bfloat16 and its (bfloat16) result back
        to float32 before the float32 bias; the rest of the network (activations, residual sums,
        caches) stays float32.
        """
        self.fuse()
        self.weight = nn.Parameter(self.weight.to(torch.bfloat16), requires_grad=False)

    def _short_and_wide(self, x: torch.Tensor) -> bool:
        """Training a layer with a large weight on few output frames (the deepest v2 layers).

        There the convolution library's backward (it re-lays out the whole weight for each of the
        input and weight gradients) costs more than the arithmetic, and the matrix-product path's
        forward + backward measured 10-25 % faster (B x T_out <= 256 rows, >= 2 M weights, 1 thread;
        slower or even for smaller weights and offline). Same function, float-rounding differences only.
        """
        return (
            self.groups == 1
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.shape[0] * (x.shape[-1] // self.stride) <= 256
            and self.weight.numel() >= 2_000_000
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gemm = self.gemm or self._short_and_wide(x)
        x = self.pad(x)
        if not gemm and self._winograd_on(x, self.weight.dtype):
            bt = self.winograd_bt.to(x.dtype)
            at = self.winograd_at.to(x.dtype)
            u = self.winograd_weight()
            return winograd_conv1d(x, u, self.bias, at, bt, self.kernel_size, self.dilation)
        w = self.effective_weight()
        # traced graphs (ONNX export) keep the plain convolution: unfold has no dynamic-length ONNX form
        if not gemm or torch.jit.is_tracing():
            if w.dtype != x.dtype:
                y = F.conv1d(x.to(w.dtype), w, None, self.stride, 0, self.dilation, self.groups)
                return y.to(x.dtype) + self.bias.unsqueeze(-1)
            return F.conv1d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        b = x.shape[0]
        if self.kernel_size == 1 and self.stride == 1:
            taps = x.unsqueeze(-1)
        else:
            span = self.dilation * (self.kernel_size - 1) + 1
            # (B, C, T_out, span) -> taps (B, C, T_out, k)
            taps = x.unfold(2, span, self.stride)[..., :: self.dilation]
        # rows (B * T_out, C * k) in (channel, tap) order: the time-major product rows x weight^T, 2-d
        # (addmm), reads the weight rows contiguously: with a few frames 2-3x faster than weight @ columns
        # (and 3-d operands go through a slower bmm)
        rows = taps.transpose(1, 2).reshape(-1, taps.shape[1] * taps.shape[3])
        if self.groups == 1:
            y = self._product(rows, w.reshape(w.shape[0], -1), self.bias)
        else:
            cols, outs = rows.shape[1] // self.groups, w.shape[0] // self.groups
            parts = [
                self._product(
                    rows[:, g * cols : (g + 1) * cols],
                    w[g * outs : (g + 1) * outs].reshape(outs, -1),
                    self.bias[g * outs : (g + 1) * outs],
                )
                for g in range(self.groups)
            ]
            y = torch.cat(parts, 1)
        return y.reshape(b, -1, w.shape[0]).transpose(1, 2)

    def _product(self, rows: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if w2.dtype != rows.dtype:
            return F.linear(rows.to(w2.dtype), w2).to(rows.dtype) + bias
        if self.gemm and rows.shape[0] == 2 and w2.shape[0] * w2.shape[1] >= self.two_row_min_weights:
            return _two_row_product(rows, w2, bias, max(1, self.two_row_block // w2.shape[1]))
        return F.linear(rows, w2, bias)


def _two_row_product(rows: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor, block: int) -> torch.Tensor:
    """``F.linear(rows, w2, bias)`` for two rows, by blocks of ``block`` output channels, each block first
    streamed into cache by a reduction.

    MKL's product of two rows reads a weight from memory at about half the rate a plain reduction
    streams it (768 x 2304: 7-8 GB/s against ~22), and takes twice its one-row time even with the weight in
    cache: neither its memory access nor its kernel suits two rows. Here ``amax`` over each ~1 MB block
    pulls it into cache at the reduction's rate, then MKL's product reads it there. The maximum of finite
    weights is finite, so ``+ 0 * max`` leaves the bias exact; it is there because TorchScript drops an
    unused result. A streaming call of v2 at 2048 samples has ten such products (its 768-channel layers,
    46 % of the product time): the call measured 1.11-1.19x faster than with one ``F.linear`` per product
    (``tools/bench/rave_stream_floor.py --two-row-ab``, in-process, alternated passes, 1 thread), 1.10x at
    4096 samples, v1 1.00-1.05x. For 4 or more rows the reduction measured a loss (0.75-0.95x): they keep
    one product.
    """
    parts: list[torch.Tensor] = []
    for i in range(0, w2.shape[0], block):
        wb = w2[i : i + block]
        parts.append(F.linear(rows, wb, bias[i : i + block] + wb.amax() * 0.0))
    return torch.cat(parts, 1)


class Upsample(nn.Module):
    """Up-sampling by ``ratio`` as a 2-tap convolution to ``ratio`` phases, interleaved in time.

    Same receptive field and parameter count as a transposed convolution of kernel ``2 * ratio`` and
    stride ``ratio``, but it streams through a one-frame cache and has no overlap-add state.
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: int, causal: bool = True):
        super().__init__()
        self.ratio = ratio
        self.out_channels = out_channels
        self.conv = Conv1d(in_channels, out_channels * ratio, 2, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        y = self.conv(x).reshape(b, self.out_channels, self.ratio, t)
        return y.transpose(2, 3).reshape(b, self.out_channels, t * self.ratio)


class DilatedUnit(nn.Module):
    """Residual unit (v2): x + conv1x1(act(conv_k,d(act(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool = True):
        super().__init__()
        self.conv1 = Conv1d(channels, channels, kernel_size, dilation=dilation, causal=causal)
        self.conv2 = Conv1d(channels, channels, 1, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the activation of conv1's fresh output and the residual sum into conv2's fresh output run in
        # place (neither convolution's backward reads its output): two fewer full-size buffers per unit
        y = F.leaky_relu_(self.conv1(F.leaky_relu(x, 0.2)), 0.2)
        return self.conv2(y).add_(x)


class ResidualPair(nn.Module):
    """Residual unit (v1): x + conv_k,d2(act(conv_k,d1(act(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], causal: bool = True):
        super().__init__()
        d1, d2 = (*dilations, 1, 1)[:2]
        self.conv1 = Conv1d(channels, channels, kernel_size, dilation=d1, causal=causal)
        self.conv2 = Conv1d(channels, channels, kernel_size, dilation=d2, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the activation of conv1's fresh output and the residual sum into conv2's fresh output run in
        # place (neither convolution's backward reads its output): two fewer full-size buffers per unit
        y = F.leaky_relu_(self.conv1(F.leaky_relu(x, 0.2)), 0.2)
        return self.conv2(y).add_(x)


class LeakyReLU(nn.Module):
    """LeakyReLU(0.2). ``inplace`` only where the input is a fresh layer output that nothing else reads
    (a convolution's or a residual unit's: their backward does not need it)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.leaky_relu_(x, 0.2)
        return F.leaky_relu(x, 0.2)


def fuse_weight_norm(module: nn.Module) -> None:
    """Fold weight normalisation of every :class:`Conv1d` under ``module`` (for inference/export)."""
    for m in module.modules():
        if isinstance(m, Conv1d):
            m.fuse()
