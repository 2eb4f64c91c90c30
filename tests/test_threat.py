import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from preempt import L2, Linf, threat_model
from preempt.core.quantize import quantize

SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))


def _tensors(shape, seed):
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(shape, generator=g)
    far = center + 3 * torch.randn(shape, generator=g)
    return center, far, g


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, eps=st.floats(0.0, 2.0), seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["linf", "l2"]))
def test_project_and_random_start_stay_in_ball_and_box(shape, eps, seed, norm):
    tm = threat_model(norm, eps)
    center, far, g = _tensors(shape, seed)
    for p in (tm.project(far, center), tm.random_start(center, generator=g)):
        assert p.min() >= 0 and p.max() <= 1
        assert (tm.distance(p, center) <= eps + 1e-5).all()
    # projecting a point already inside changes nothing
    inside = tm.random_start(center, generator=g)
    assert torch.allclose(tm.project(inside, center), inside, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1), alpha=st.floats(1e-3, 1.0))
def test_steps_have_the_norms_length(shape, seed, alpha):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    x = torch.zeros(shape)
    d_inf = Linf(1.0).step(x, g, alpha) - x
    assert torch.allclose(d_inf.abs()[g != 0], torch.full_like(d_inf[g != 0], alpha))
    d2 = L2(1.0).step(x, g, alpha) - x
    assert torch.allclose(d2.flatten(1).norm(dim=1), torch.full((shape[0],), alpha), rtol=1e-4)
    # the step ascends: <d, g> > 0
    assert ((d2 * g).flatten(1).sum(1) > 0).all()


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, delta=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(["linf", "l2"]))
def test_quantize_keeps_8bit_budget(shape, delta, seed, norm):
    tm = threat_model(norm, delta)
    g = torch.Generator().manual_seed(seed)
    x_o = torch.randint(0, 256, shape, generator=g).float() / 255
    x_r = tm.random_start(x_o, generator=g)
    q = quantize(x_r, x_o, tm)
    assert torch.allclose(q * 255, torch.round(q * 255), atol=1e-4)  # on the grid
    assert (tm.distance(q, x_o) <= delta + 1e-6).all()
    assert q.min() >= 0 and q.max() <= 1


def test_bad_eps_and_norm():
    with pytest.raises(ValueError):
        Linf(-1.0)
    with pytest.raises(ValueError):
        L2(math.inf)
    with pytest.raises(ValueError):
        threat_model("l7", 0.1)
