"""The speed paths of the convolution blocks compute the same function as the plain definitions.

Each fast path (native weight norm, in-place activations and residual sums, causal pad by ``cat``, the
matrix-product path for short and wide layers in training, the two-frame streaming products by blocks,
the Winograd F(6, 3) path) is checked
against the textbook formula it replaces, outputs and gradients, on the band signal of a real recording.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from acids_rave import blocks
from acids_rave.blocks import CachedPad, Conv1d, DilatedUnit, LeakyReLU, winograd_matrices
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


def _assert_same_grads(y, ref, inputs, rtol: float, atol: float, scale_atol: bool = False) -> None:
    """Gradients of ``y`` and ``ref`` w.r.t. ``inputs`` under one random upstream gradient agree
    (``scale_atol``: ``atol`` relative to each reference gradient's largest magnitude)."""
    g = torch.randn_like(y)
    got, want = torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * (b.abs().max().item() if scale_atol else 1.0))


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
        _assert_same_grads(y, ref, (x, m.weight, m.gain, m.bias), rtol=1e-4, atol=1e-5)


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
    _assert_same_grads(y, ref, (x, m.weight, m.gain, m.bias), rtol=1e-3, atol=1e-4)


def test_streaming_products_of_two_frames_go_by_blocks(real_audio, monkeypatch):
    # v2's 768-channel dilated layer, fused as in an export, on the matrix-product path (streaming)
    torch.manual_seed(0)
    m = Conv1d(768, 768, 3, dilation=3)
    m.fuse()
    m.gemm = True
    calls = []
    two_rows = blocks._two_row_product
    monkeypatch.setattr(blocks, "_two_row_product", lambda *a: calls.append(a[0].shape) or two_rows(*a))
    x = _bands(real_audio, 768, 40)
    with torch.no_grad():
        for frames in (1, 2, 3):
            y = m(x[..., :frames])
            ref = _reference_conv(m, x[..., :frames])
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
        assert calls == [(2, 768 * 3)]  # two frames only: one or three take one product
        m.gemm = False
        m(x[..., :2])
        assert len(calls) == 1  # offline (and training) keep the convolution library
        small = Conv1d(96, 96, 3)  # 27 k weights
        small.fuse()
        small.gemm = True
        small(x[:, :96, :2])
        assert len(calls) == 1  # small weights: one product
        m.gemm = True
        monkeypatch.undo()  # TorchScript compiles the module's own function
        scripted = torch.jit.script(m)
        for _ in range(3):  # past TorchScript's profiling runs, to the optimised graph
            torch.testing.assert_close(scripted(x[..., :2]), m(x[..., :2]), rtol=0, atol=0)
        with torch.profiler.profile() as prof:
            scripted(x[..., :2])
        # the reduction that pulls each block into cache survives TorchScript's dead-code elimination
        assert any(e.key == "aten::amax" for e in prof.key_averages())


def test_small_model_streams_like_offline_through_two_row_products(real_audio):
    """Blocks of two latent frames through every two-frame product by blocks: offline's audio."""
    from acids_rave.config import PRESETS
    from acids_rave.model import Rave

    cfg = PRESETS["small"]()
    torch.manual_seed(0)
    model = Rave(cfg).eval()
    for m in model.modules():
        if isinstance(m, Conv1d):
            m.two_row_min_weights = 0  # every product of two frames, whatever its size
            m.two_row_block = 4096  # several blocks even in small layers
    r = cfg.compression_ratio
    x, _ = real_audio(1.0)
    x = x[..., : x.shape[-1] // r * r]
    with torch.no_grad():
        offline = model(x)
        model.set_streaming(True)
        streamed = torch.cat([model(c) for c in x.split(2 * r, -1)], -1)
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-3)


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
    params = (x, unit.conv1.weight, unit.conv1.gain, unit.conv2.weight, unit.conv2.bias)
    _assert_same_grads(y, ref, params, rtol=1e-4, atol=1e-5)
    act = LeakyReLU(inplace=True)
    z = torch.tensor([-1.0, 2.0])
    assert act(z) is z and torch.equal(z, torch.tensor([-0.2, 2.0]))
    z = torch.tensor([-1.0, 2.0])
    assert torch.equal(LeakyReLU()(z), torch.tensor([-0.2, 2.0])) and torch.equal(
        z, torch.tensor([-1.0, 2.0])
    )


# --- Winograd F(6, 3) path ---------------------------------------------------------------------------


def _winograd_layer(cin: int, cout: int, dilation: int, causal: bool = True) -> Conv1d:
    """A kernel-3 layer with the Winograd path switched on whatever its width (the rule's width half)."""
    m = Conv1d(cin, cout, 3, dilation=dilation, causal=causal)
    m.winograd, m.winograd_frames = 6, 4096
    m.winograd_at, m.winograd_g, m.winograd_bt = winograd_matrices(6, 3)
    with torch.no_grad():
        m.gain.mul_(1.3)
    return m


def _count_winograd(monkeypatch) -> list[int]:
    """Patch the module's winograd_conv1d to count its calls (it still computes)."""
    calls: list[int] = []
    real = blocks.winograd_conv1d

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(blocks, "winograd_conv1d", counted)
    return calls


@pytest.mark.parametrize(("m", "r"), [(2, 3), (4, 3), (6, 3), (2, 2), (6, 2), (3, 4)])
def test_winograd_transforms_are_the_correlation(m, r):
    at, g, bt = blocks._winograd_matrices_f64(m, r)
    gen = torch.Generator().manual_seed(m * 10 + r)
    d = torch.randn(m + r - 1, dtype=torch.float64, generator=gen)
    w = torch.randn(r, dtype=torch.float64, generator=gen)
    want = torch.stack([sum(w[j] * d[i + j] for j in range(r)) for i in range(m)])
    torch.testing.assert_close(at @ ((g @ w) * (bt @ d)), want, rtol=1e-12, atol=1e-12)
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2


@pytest.mark.parametrize(
    ("cin", "cout", "dilation", "frames", "batch", "causal"),
    [
        (192, 192, 1, 600, 2, True),  # 600 = 100 tiles: no tail
        (48, 64, 3, 517, 3, True),  # tail: 517 frames are not a multiple of 6 x 3
        (64, 48, 9, 1000, 1, False),  # centred padding
        (32, 32, 9, 108, 2, True),  # exactly two tiles per phase
        (16, 24, 1, 23, 1, False),
    ],
)
def test_winograd_matches_conv1d_outputs_and_gradients(
    real_audio, cin, cout, dilation, frames, batch, causal
):
    torch.manual_seed(0)
    m = _winograd_layer(cin, cout, dilation, causal)
    x = _bands(real_audio, cin, frames, batch=batch).requires_grad_(True)
    assert m._winograd_on(m.pad(x.detach()), m.weight.dtype)
    y = m(x)
    ref = _reference_conv(m, x)
    assert y.shape == ref.shape == (batch, cout, frames)
    rel = ((y - ref).abs().max() / ref.abs().max()).item()
    assert rel < 1e-5, rel  # measured 1-3e-6: float32 rounding of the transforms
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    _assert_same_grads(y, ref, (x, m.weight, m.gain, m.bias), rtol=1e-4, atol=1e-4, scale_atol=True)


def test_winograd_rule_and_the_paths_that_keep_the_convolution(real_audio, monkeypatch):
    assert Conv1d(384, 384, 3, dilation=9).winograd == Conv1d(192, 192, 3).winograd == 6
    assert Conv1d(96, 96, 3).winograd == 0  # oneDNN is faster at 96 channels
    assert Conv1d(384, 768, 8, stride=4).winograd == Conv1d(384, 384, 1).winograd == 0
    assert Conv1d(384, 384, 2).winograd == Conv1d(384, 384, 3, groups=2).winograd == 0
    m = Conv1d(384, 384, 3, dilation=3)
    assert set(m.state_dict()) == {"weight", "bias", "gain"}  # checkpoints unchanged
    x = _bands(real_audio, 384, 1728)
    assert m._winograd_on(m.pad(x), m.weight.dtype)
    assert m._winograd_on(m.pad(_bands(real_audio, 384, 8192, batch=4)), m.weight.dtype)
    assert not m._winograd_on(m.pad(_bands(real_audio, 384, 8200, batch=4)), m.weight.dtype)  # > 32768
    narrow = Conv1d(192, 192, 3, dilation=9)
    assert narrow._winograd_on(narrow.pad(_bands(real_audio, 192, 1024, batch=4)), torch.float32)
    assert not narrow._winograd_on(narrow.pad(_bands(real_audio, 192, 6912)), torch.float32)  # > 4096
    assert not m._winograd_on(m.pad(x[..., :30]), m.weight.dtype)  # fewer than two tiles per phase
    calls = _count_winograd(monkeypatch)
    with torch.no_grad():
        ref = _reference_conv(m, x)
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
        assert len(calls) == 1
        m.gemm = True  # streaming: the matrix-product path
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
        m.gemm = False
        traced = torch.jit.trace(m, x)  # traced graphs (ONNX) keep the plain convolution
        graph = str(traced.inlined_graph)
        assert "aten::_convolution" in graph and "aten::bmm" not in graph
        assert len(calls) == 2  # tracing's own run took the convolution: only the eager call above
        m.to_bfloat16()  # bfloat16 weights: the convolution library
        m(x)
        assert len(calls) == 2


def test_winograd_weight_cache_follows_the_weight(real_audio):
    torch.manual_seed(0)
    m = _winograd_layer(192, 192, 3)
    x = _bands(real_audio, 192, 540)
    m.fuse()
    with torch.no_grad():
        y = m(x)
        u = m.winograd_weight()
        assert m.winograd_weight() is u  # cached at inference after fuse()
        torch.testing.assert_close(y, _reference_conv(m, x), rtol=1e-4, atol=1e-5 * y.abs().max().item())
        other = Conv1d(192, 192, 3, dilation=3)
        other.fuse()
        m.load_state_dict(other.state_dict())  # in-place copy: the cache must not serve the old weight
        assert m.winograd_weight() is not u
        ref = _reference_conv(m, x)
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    with torch.inference_mode():  # made inside inference mode: computed, not cached, still right
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_winograd_layer_scripts(real_audio):
    torch.manual_seed(0)
    m = _winograd_layer(64, 64, 3)
    x = _bands(real_audio, 64, 540)
    scripted = torch.jit.script(m)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), m(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scripted(x), _reference_conv(m, x), rtol=1e-4, atol=1e-4)


def _model_winograd(model) -> list[Conv1d]:
    return [m for m in model.modules() if isinstance(m, Conv1d) and m.winograd]


def test_v2_model_through_winograd_matches_the_convolution_library(real_audio, monkeypatch):
    """The whole fused v2 model, offline on real audio, with and without the Winograd layers."""
    from acids_rave.config import PRESETS
    from acids_rave.model import Rave

    torch.manual_seed(0)
    model = Rave(PRESETS["v2"]()).eval()
    model.fuse()
    layers = _model_winograd(model)
    assert len(layers) == 17  # the 192-768-channel dilated units (8 + 8) and the encoder head
    x, _ = real_audio(1.5, offset=8.0)
    calls = _count_winograd(monkeypatch)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
        assert len(calls) == 17  # at this length every one of them runs through Winograd
        for m in layers:
            m.winograd = 0
        z_ref = model.encode(x)
        y_ref = model.decode(z_ref)
    assert len(calls) == 17
    for got, want in ((z, z_ref), (y, y_ref)):
        rel = ((got - want).abs().max() / want.abs().max()).item()
        assert rel < 1e-5, rel  # measured ~1e-6 (10 s of violin: 8e-7 latent, 5e-7 audio)


def test_small_model_streams_like_offline_through_winograd(real_audio, monkeypatch):
    """Offline runs the Winograd layers, streaming the matrix-product path: same audio."""
    from acids_rave.config import PRESETS
    from acids_rave.model import Rave

    cfg = PRESETS["small"]()
    torch.manual_seed(0)
    model = Rave(cfg).eval()
    r = cfg.compression_ratio
    x, _ = real_audio(1.0)
    x = x[..., : x.shape[-1] // r * r]
    calls = _count_winograd(monkeypatch)
    with torch.no_grad():
        offline = model(x)
        used = len(calls)
        assert used > 0
        model.set_streaming(True)
        streamed = torch.cat([model(c) for c in x.split(4 * r, -1)], -1)
    assert len(calls) == used  # streaming never takes the Winograd path
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-3)


def test_torch_export_keeps_the_convolution(real_audio):
    m = Conv1d(192, 192, 3, dilation=3)
    x = _bands(real_audio, 192, 540)
    t = torch.export.Dim("t", min=24, max=4096)
    with torch.no_grad():  # (with gradients on, _short_and_wide's frame test would guard the length)
        program = torch.export.export(m, (x,), dynamic_shapes=({2: t},), strict=False)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("conv1d" in name or "convolution" in name for name in targets), targets
    assert not any("bmm" in name for name in targets), targets
    with torch.no_grad():
        ref = _reference_conv(m, x)
        torch.testing.assert_close(program.module()(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
