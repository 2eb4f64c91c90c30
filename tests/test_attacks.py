import pytest
import torch

from preempt import L2, Linf
from preempt.attacks import losses, pgd, pgd_unrolled


def _double(model):
    import copy

    m = copy.deepcopy(model).double()
    return m


def _objective(model, x, y, threat, seed, graph="full", create_graph=False):
    gen = torch.Generator().manual_seed(seed)
    xa, _ = pgd_unrolled(model, x, y, threat=threat, steps=5, generator=gen, graph=graph, create_graph=create_graph)
    return losses.ce(model(xa), y).sum()


@pytest.mark.parametrize("threat,second_order", [(Linf(0.05), False), (L2(0.4), True)])
def test_unrolled_gradient_matches_finite_differences(tiny_model, tiny_data, threat, second_order):
    """ℓ∞: the sign step is locally constant, so the first-order unrolled gradient is exact.
    ℓ2: the normalised step depends on x, so only the second-order (create_graph) one is."""
    model = _double(tiny_model)
    x, y = tiny_data
    x, y = x[:3].double().clamp(0.05, 0.95), y[:3]
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_objective(model, xr, y, threat, seed=1, create_graph=second_order), xr)
    gen = torch.Generator().manual_seed(7)
    h = 1e-6
    for _ in range(6):
        v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        fd = (_objective(model, x + h * v, y, threat, 1) - _objective(model, x - h * v, y, threat, 1)) / (2 * h)
        assert torch.isclose((g * v).sum(), fd, rtol=1e-3, atol=1e-6), ((g * v).sum(), fd)


def test_linf_diag_graph_equals_full_graph(tiny_model, tiny_data):
    model = _double(tiny_model)
    x, y = tiny_data
    x, y = x[:8].double(), y[:8]
    grads = []
    for graph in ("full", "diag"):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_objective(model, xr, y, Linf(0.1), seed=3, graph=graph), xr)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)
    assert grads[0].abs().sum() > 0


def test_l2_first_order_is_an_approximation(tiny_model, tiny_data):
    model = _double(tiny_model)
    x, y = tiny_data
    x, y = x[:4].double(), y[:4]
    g = []
    for second in (False, True):
        xr = x.clone().requires_grad_(True)
        g.append(torch.autograd.grad(_objective(model, xr, y, L2(0.5), seed=2, create_graph=second), xr)[0])
    assert torch.isfinite(g[1]).all()
    cos = torch.nn.functional.cosine_similarity(g[0].flatten(), g[1].flatten(), dim=0)
    assert 0.5 < cos < 1 - 1e-9  # close, not equal


@pytest.mark.parametrize("threat", [Linf(1.0), L2(8.0)])
def test_pgd_breaks_a_non_robust_model_at_large_eps(tiny_model, tiny_data, threat):
    x, y = tiny_data
    res = pgd(tiny_model, x[:200], y[:200], threat=threat, steps=20, generator=torch.Generator().manual_seed(0))
    assert res.robust.float().mean() < 0.02
    # the returned points are adversarial and inside the ball
    assert (tiny_model.predict(res.x_adv[res.success]) != y[:200][res.success]).all()
    assert (threat.distance(res.x_adv, x[:200]) <= threat.eps + 1e-5).all()


def test_pgd_at_zero_eps_is_clean_accuracy(tiny_model, tiny_data):
    x, y = tiny_data
    res = pgd(tiny_model, x, y, threat=Linf(0.0), steps=5)
    clean = tiny_model.predict(x) == y
    assert torch.equal(res.robust, clean)


def test_targeted_pgd_reaches_targets(tiny_model, tiny_data):
    x, y = tiny_data
    target = (y[:100] + 1) % 4
    res = pgd(tiny_model, x[:100], target, threat=Linf(1.0), steps=30, targeted=True)
    assert res.success.float().mean() > 0.95
    assert (tiny_model.predict(res.x_adv[res.success]) == target[res.success]).all()


def test_losses_hand_computed():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([1])
    assert torch.isclose(losses.margin(z, y), torch.tensor([2.0]))
    # dlr = -(z_y - max_other) / (z_pi1 - z_pi3 + 1e-12) = -(1 - 3) / (3 - 0)
    assert torch.isclose(losses.dlr(z, y), torch.tensor([2.0 / 3.0]))
