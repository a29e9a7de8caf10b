"""The speed paths of the convolution blocks compute the same function as the plain definitions.

Each fast path (native weight norm, in-place activations and residual sums, causal pad by ``cat``, the
matrix-product path for short and wide layers in training) is checked against the textbook formula it
replaces, outputs and gradients, on the band signal of a real recording.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from acids_rave.blocks import CachedPad, Conv1d, DilatedUnit, LeakyReLU
from acids_rave.pqmf import PQMF


def _bands(real_audio, channels: int, frames: int, batch: int = 1) -> torch.Tensor:
    """(batch, channels, frames) taken from the PQMF bands of real violin audio (tiled over channels)."""
    x, _ = real_audio(2.0)
    bands = PQMF(16, 16).eval()(x)[0]  # (16, T / 16)
    reps = -(-channels // 16)
    rows = bands.repeat(reps, 1)[:channels]
    need = batch * frames
    if rows.shape[-1] < need:
        rows = rows.repeat(1, -(-need // rows.shape[-1]))
    return rows[:, :need].reshape(channels, batch, frames).transpose(0, 1).contiguous() * 10


def _reference_conv(m: Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Weight norm by its formula, zero padding by F.pad, then F.conv1d."""
    w = m.weight
    if m.weight_norm:
        w = w * (m.gain / torch.linalg.vector_norm(w, dim=(1, 2), keepdim=True))
    x = F.pad(x, (m.pad.left, m.pad.right))
    return F.conv1d(x, w, m.bias, m.stride, 0, m.dilation, m.groups)


def test_weight_norm_and_cat_pad_match_the_formula(real_audio):
    torch.manual_seed(0)
    for causal in (True, False):
        m = Conv1d(16, 24, 3, dilation=3, causal=causal)
        with torch.no_grad():
            m.gain.mul_(1.7)  # gain away from the initial norm, so the normalisation matters
        x = _bands(real_audio, 16, 512).requires_grad_(True)
        y = m(x)
        ref = _reference_conv(m, x)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        got = torch.autograd.grad(y, (x, m.weight, m.gain, m.bias), g)
        want = torch.autograd.grad(ref, (x, m.weight, m.gain, m.bias), g)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_causal_pad_is_zeros_then_input(real_audio):
    x = _bands(real_audio, 4, 100)
    torch.testing.assert_close(CachedPad(5)(x), F.pad(x, (5, 0)), rtol=0, atol=0)


def test_short_and_wide_layers_train_through_products(real_audio):
    # the shape of v2's deepest encoder layer in training: 768 -> 1536, kernel 4, stride 2
    torch.manual_seed(0)
    m = Conv1d(768, 1536, 4, stride=2)
    x = _bands(real_audio, 768, 64, batch=4).requires_grad_(True)
    assert m._short_and_wide(x)
    with torch.no_grad():
        assert not m._short_and_wide(x)  # inference keeps the convolution library
    assert not m._short_and_wide(_bands(real_audio, 768, 1024, batch=4))  # long signals too
    assert not Conv1d(96, 96, 3)._short_and_wide(x[:, :96])  # and small weights
    y = m(x)
    ref = _reference_conv(m, x)
    assert y.shape == ref.shape == (4, 1536, 32)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, m.weight, m.gain, m.bias), g)
    want = torch.autograd.grad(ref, (x, m.weight, m.gain, m.bias), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_in_place_units_match_the_formula_and_leave_their_input(real_audio):
    torch.manual_seed(0)
    unit = DilatedUnit(32, 3, 9)
    x = _bands(real_audio, 32, 600, batch=2).requires_grad_(True)
    keep = x.detach().clone()
    y = unit(x)
    assert torch.equal(x.detach(), keep)  # the residual input is not modified
    h = _reference_conv(unit.conv1, F.leaky_relu(x, 0.2))
    ref = x + _reference_conv(unit.conv2, F.leaky_relu(h, 0.2))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    params = (x, unit.conv1.weight, unit.conv1.gain, unit.conv2.weight, unit.conv2.bias)
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    act = LeakyReLU(inplace=True)
    z = torch.tensor([-1.0, 2.0])
    assert act(z) is z and torch.equal(z, torch.tensor([-0.2, 2.0]))
    z = torch.tensor([-1.0, 2.0])
    assert torch.equal(LeakyReLU()(z), torch.tensor([-0.2, 2.0])) and torch.equal(
        z, torch.tensor([-1.0, 2.0])
    )
