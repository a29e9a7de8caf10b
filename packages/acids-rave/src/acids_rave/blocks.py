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

import torch
from torch import nn
from torch.nn import functional as F


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
    """

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
        return F.linear(rows, w2, bias)


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
