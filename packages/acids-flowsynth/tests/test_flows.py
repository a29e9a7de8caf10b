"""Flows: autoregressive masks, invertibility, log-det against the autograd Jacobian (tiny dims)."""

import pytest
import torch

from acids_flowsynth.flows import IAF, MADE, MAF, FlowSequence, make_flow

D = 4


def randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Random weights everywhere (the heads start at zero, which would make every test trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def jacobian_logdet(flow, x):
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out), jac


def test_made_is_autoregressive():
    made = randomise(MADE(D, 12, layers=2))
    x = torch.randn(D)
    for out in made(x[None]):
        jac = torch.autograd.functional.jacobian(lambda v, o=out: made(v[None]), x)
        for j in jac:
            j = j[0]  # (D, D): output i w.r.t. input k
            assert torch.all(torch.triu(j) == 0), "output i must not depend on inputs >= i"


@pytest.mark.parametrize("block", [IAF, MAF])
def test_block_inverse_and_logdet(block):
    torch.manual_seed(0)
    f = randomise(block(D, 12, layers=1), seed=1)
    x = torch.randn(5, D, dtype=torch.float64)
    f = f.double()
    y, logdet = f(x)
    torch.testing.assert_close(f.inverse(y), x, rtol=1e-8, atol=1e-8)
    ref, jac = jacobian_logdet(f, x)
    torch.testing.assert_close(logdet, ref, rtol=1e-8, atol=1e-8)
    assert torch.allclose(torch.triu(jac, 1), torch.zeros_like(jac))  # triangular


@pytest.mark.parametrize("kind", ["iaf", "maf"])
def test_sequence_inverse_and_logdet(kind):
    f = randomise(make_flow(kind, D, length=3, hidden=8, seed=2), seed=3).double()
    assert isinstance(f, FlowSequence)
    x = torch.randn(6, D, dtype=torch.float64)
    y, logdet = f(x)
    torch.testing.assert_close(f.inverse(y), x, rtol=1e-7, atol=1e-7)
    ref, _ = jacobian_logdet(f, x)
    torch.testing.assert_close(logdet, ref, rtol=1e-7, atol=1e-7)


def test_fresh_flows_are_near_identity():
    f = make_flow("maf", D, length=3, hidden=8)
    x = torch.randn(3, D)
    y, logdet = f(x)
    torch.testing.assert_close(y, x)  # zero-initialised heads and two reversals
    assert torch.all(logdet == 0)


def test_a_fresh_iaf_stack_is_the_identity():
    """A gated IAF block used to start as a contraction by sigmoid(1) = 0.73, so the paper's 16-block
    posterior shrank the latent 150x at initialisation (the flow models then barely learnt)."""
    f = make_flow("iaf", D, length=16, hidden=8)
    x = torch.randn(5, D)
    y, logdet = f(x)
    perm = torch.arange(D)
    for block in f.flows:
        if hasattr(block, "perm"):
            perm = perm[block.perm]
    torch.testing.assert_close(y, x[:, perm])
    torch.testing.assert_close(logdet, torch.zeros(5))


def test_regression_flow_is_invertible_through_the_model():
    import dataclasses

    from acids_flowsynth.config import preset, with_params

    cfg = with_params(preset("tiny"), D)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kind="flow_reg"))
    from acids_flowsynth.model import FlowSynth

    m = FlowSynth(cfg).eval()
    randomise(m.regressor, seed=4, scale=0.1)  # keep the sigmoid out of saturation
    z = torch.randn(3, D)
    with torch.no_grad():
        v = m.regress(z)
        torch.testing.assert_close(m.latent_of(v), z, rtol=1e-3, atol=1e-3)
