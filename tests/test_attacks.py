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


from preempt.attacks import apgd, fab_targeted, square  # noqa: E402
from preempt.attacks.auto_pgd import checkpoints  # noqa: E402
from preempt.attacks.fab import project_hyperplane_box  # noqa: E402
from preempt.attacks.registry import ATTACKS, Attack, get, register  # noqa: E402
from preempt.attacks.square_search import p_selection  # noqa: E402
from preempt.verdict import run_suite  # noqa: E402

# shorter runs than the defaults, so the table over every registered attack stays quick
QUICK = {"pgd": {}, "apgd-ce": {"steps": 30}, "apgd-dlr": {"steps": 30}, "apgd-t": {"steps": 20, "n_targets": 3},
         "apgd-ce-25": {}, "apgd-t-25": {}, "fab-t": {"steps": 20, "n_targets": 3}, "square": {"queries": 300},
         "apgd-ce-eot": {"steps": 20, "eot": 2}, "apgd-dlr-eot": {"steps": 20, "eot": 2}, "adaptive": {},
         "transfer-pgd-20": {}, "transfer-apgd-ce": {}}


def _run(name, model, x, y, threat, gen):
    kw = dict(QUICK[name])
    if name.startswith("transfer-"):
        kw["surrogate"] = model  # the model itself: a perfect surrogate
    return get(name)(model, x, y, threat, generator=gen, **kw)


def test_the_quick_table_covers_every_registered_attack():
    assert set(QUICK) == set(ATTACKS)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("threat", [Linf(1.0), L2(8.0)], ids=["linf", "l2"])
def test_each_attack_breaks_a_non_robust_model_at_large_eps(tiny_model, tiny_data, name, threat):
    x, y = tiny_data
    x, y = x[:60], y[:60]
    r = _run(name, tiny_model, x, y, threat, torch.Generator().manual_seed(0))
    assert r.robust.float().mean() <= 0.05
    assert (threat.distance(r.x_adv, x) <= threat.eps + 1e-5).all()
    assert (tiny_model.predict(r.x_adv[r.success]) != y[r.success]).all()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_attack_at_zero_eps_keeps_clean_accuracy(tiny_model, tiny_data, name):
    x, y = tiny_data
    x, y = x[:40], y[:40].clone()
    y[:5] = (y[:5] + 1) % 4  # a few points misclassified from the start
    clean = tiny_model.predict(x) == y
    r = _run(name, tiny_model, x, y, Linf(0.0), torch.Generator().manual_seed(0))
    assert torch.equal(r.robust, clean)


def test_an_attack_added_by_one_register_line_runs_in_every_suite_by_name(tiny_model, tiny_data, monkeypatch):
    """The example of docs/library.md: a new attack is one function and one register() line; a check names it."""
    from preempt.verdict.check import CHECKS, Check

    def shift(model, x, y, *, threat, generator=None, scale=1.0):  # a (weak) attack: the far corner of the ball
        from preempt.attacks.base import AttackResult

        xa = threat.project((x + scale * threat.eps * (1 - 2 * (x > 0.5).float())).clamp(0, 1), x)
        return AttackResult(xa, model.predict(xa) != y, len(x))

    monkeypatch.setitem(ATTACKS, "corner", Attack("corner", shift, "the corner of the ball", {"scale": 1.0}))
    x, y = tiny_data[0][:50], tiny_data[1][:50]
    res = Check("corner", "corner").judge(tiny_model, x, y, Linf(1.0))
    assert list(res.per_attack) == ["clean", "corner"] and res.per_attack["corner"] < res.per_attack["clean"]
    # ... and in an existing check, after its own attacks
    both = Check("quick+corner", CHECKS["quick"].stages + "+corner").judge(tiny_model, x, y, Linf(0.01))
    assert list(both.per_attack) == ["clean", "pgd-20", "apgd-ce", "corner"]
    with pytest.raises(ValueError, match="registered already"):
        register("apgd-ce", shift, help="a second apgd-ce")
    with pytest.raises(KeyError):
        get("nope")
    assert get("pgd-7").defaults == {"steps": 7}


def test_apgd_checkpoints_are_the_reference_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_halves_the_step_when_the_loss_stalls():
    """A constant model: the loss never rises, so every checkpoint halves the step (from 2ε)."""
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0 * x.flatten(1).sum(1, keepdim=True)

    r = apgd(Const(), torch.rand(2, 1, 3, 3), torch.tensor([0, 0]), threat=Linf(0.1), steps=100)
    h = r.info["step_history"][:, 0]
    assert h[0] == pytest.approx(0.2)
    changes = [i for i in range(1, len(h)) if h[i] != h[i - 1]]
    assert changes == checkpoints(100)[:-1] or changes == checkpoints(100)
    assert h[-1] == pytest.approx(0.2 / 2 ** len(changes))


def test_targeted_dlr_hand_computed():
    z = torch.tensor([[4.0, 3.0, 1.0, 0.0, -2.0]])
    y, t = torch.tensor([1]), torch.tensor([2])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 1) / (4 - 0.5) = -4/7
    assert torch.isclose(losses.dlr_targeted(z, y, t), torch.tensor([-4.0 / 7.0]))


def test_square_schedule():
    assert p_selection(0.8, 5, 10000) == 0.8
    assert p_selection(0.8, 40, 10000) == 0.4
    assert p_selection(0.8, 9000, 10000) == 0.8 / 512
    assert p_selection(0.8, 20, 5000) == 0.4  # rescaled to 5,000 queries


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projection_lands_on_the_plane_inside_the_box(norm):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(16, 20, generator=g)
    w = torch.randn(16, 20, generator=g)
    b = (w * torch.rand(16, 20, generator=g)).sum(1)  # a plane that meets the box
    d = project_hyperplane_box(p, w, b, norm)
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-4)
    assert ((p + d) >= -1e-6).all() and ((p + d) <= 1 + 1e-6).all()
    if norm == "l2":  # without box constraints active the answer is the orthogonal projection
        p2 = torch.full((1, 4), 0.5)
        w2 = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
        d2 = project_hyperplane_box(p2, w2, torch.tensor([1.1]), "l2")
        assert torch.allclose(d2, w2 * (1.1 - 1.0) / 6.0, atol=1e-5)


def test_suite_is_worst_case_and_monotone(tiny_model, tiny_data):
    x, y = tiny_data
    x, y = x[:40], y[:40]
    r = run_suite(tiny_model, x, y, threat=Linf(0.1), suite="quick", generator=torch.Generator().manual_seed(0))
    accs = list(r.per_attack.values())
    assert accs == sorted(accs, reverse=True)
    assert r.robust.float().mean().item() == pytest.approx(accs[-1])
    assert all((b is None) == bool(ok) for b, ok in zip(r.broken_by, r.robust.tolist()))


def test_suite_workers_are_reproducible_and_sound(tiny_model, tiny_data):
    x, y = tiny_data
    x, y = x[:40], y[:40]
    t = Linf(0.15)
    threads = torch.get_num_threads()
    runs = [run_suite(tiny_model, x, y, threat=t, suite="quick", generator=torch.Generator().manual_seed(0), workers=w)
            for w in (2, 2, 1)]
    assert torch.equal(runs[0].robust, runs[1].robust) and torch.equal(runs[0].x_adv, runs[1].x_adv)
    for r in runs:
        broken = ~r.robust & (tiny_model.predict(x) == y)
        assert (t.distance(r.x_adv, x) <= t.eps + 1e-5).all()
        assert (tiny_model.predict(r.x_adv[broken]) != y[broken]).all()
    # two workers split the points, they do not weaken the suite
    assert abs(runs[0].robust.float().mean() - runs[2].robust.float().mean()) <= 0.1
    assert torch.get_num_threads() == threads  # the workers' thread split is undone after the suite


def test_fab_drops_points_once_broken_within_eps(tiny_model, tiny_data):
    x, y = tiny_data
    x, y = x[:30], y[:30]
    big = fab_targeted(tiny_model, x, y, threat=Linf(1.0), steps=20, n_targets=2)
    none = fab_targeted(tiny_model, x, y, threat=Linf(0.0), steps=20, n_targets=2)
    # at ε = 0 every correct point runs all 2 × 20 iterations (2 passes each); at ε = 1 the
    # points leave as soon as they are broken
    n = int((tiny_model.predict(x) == y).sum())
    assert none.passes == len(x) + 2 * n * 2 * 20
    assert big.passes < none.passes / 2
    assert big.success.float().mean() > 0.95


def test_square_linf_never_proposes_an_unchanged_window():
    from preempt.attacks.square_search import _linf_proposal, _windows

    g = torch.Generator().manual_seed(0)
    xa = torch.full((500, 1, 6, 6), 0.5)
    xb = xa + 0.1  # every pixel already at +ε: half of plain draws would change nothing
    win = _windows(500, 6, 6, 2, g, "cpu")
    x_new = _linf_proposal(xa, xb, win, 0.1, g)
    changed = ((x_new - xb).abs() > 1e-7).flatten(1).any(1)
    assert changed.all()
    assert torch.equal(x_new[~win.expand_as(x_new)], xb[~win.expand_as(xb)])  # outside the window: x_best


def test_square_l2_eta_pattern_hand_computed():
    from preempt.attacks.square_search import eta

    top = torch.tensor([[0.25, 1.25, 0.25]])
    bottom = torch.tensor([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]])
    want = torch.cat([top / top.norm(), -bottom / bottom.norm()])
    assert torch.allclose(eta(3), want / want.norm(), atol=1e-6)
    for s in (4, 5, 9):
        e = eta(s)
        assert e.shape == (s, s) and abs(e.norm().item() - 1) < 1e-5
        assert (e[: s // 2] > 0).all() and (e[s // 2:] < 0).all()


def test_square_l2_stays_in_the_ball_and_the_box(tiny_model, tiny_data):
    x, y = tiny_data
    x, y = x[:30], y[:30]
    r = square(tiny_model, x, y, threat=L2(0.5), queries=200, generator=torch.Generator().manual_seed(1))
    assert (L2(0.5).distance(r.x_adv, x) <= 0.5 + 1e-5).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1


def test_cw_l2_finds_closer_points_than_pgd_and_keeps_to_its_box(tiny_model, tiny_data):
    from preempt.attacks.cw import cw_l2, cw_margin

    x, y = tiny_data[0][:60], tiny_data[1][:60]
    ok = tiny_model.predict(x) == y
    x, y = x[ok], y[ok]
    res = cw_l2(tiny_model, x, y, steps=60, binary_steps=4)
    assert res.success.float().mean() > 0.9
    hit = res.success
    assert (tiny_model.predict(res.x_adv[hit]) != y[hit]).all()
    l2 = (res.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(l2[hit], res.info["l2"][hit], atol=1e-5)
    assert torch.isinf(res.info["l2"][~hit]).all() and torch.equal(res.x_adv[~hit], x[~hit])
    assert res.passes == 60 * 4 * len(x)
    # the minimum-norm attack beats an ℓ2 PGD of the radius it needed on most points
    r = float(l2[hit].median())
    p = pgd(tiny_model, x, y, threat=L2(0.5 * r), steps=20, generator=torch.Generator().manual_seed(0))
    assert (l2[hit] <= 0.5 * r).float().mean() >= p.success.float().mean() - 0.2
    # inside an ℓ∞ box: every candidate stays in it and in [0, 1]
    box = cw_l2(tiny_model, x, y, threat=Linf(0.05), steps=40, binary_steps=2)
    assert (Linf(0.05).distance(box.x_adv, x) <= 0.05 + 1e-6).all()
    assert box.x_adv.min() >= 0 and box.x_adv.max() <= 1
    assert (cw_margin(tiny_model(x), y) > 0).all() and (cw_margin(tiny_model(res.x_adv[hit]), y[hit], 1.0) <= 0).all()
    with pytest.raises(ValueError):
        cw_l2(tiny_model, x, y, threat=L2(1.0))


def test_ranked_targets_and_collapse_hand_computed():
    from preempt.attacks.base import AttackResult, ranked_targets

    z = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 6.0, 0.0]])
    assert ranked_targets(z, torch.tensor([1, 2]), 9).tolist() == [[3, 2, 0], [0, 1, 3]]
    assert ranked_targets(z, torch.tensor([1, 2]), 2).tolist() == [[3, 2], [0, 1]]
    # two points, three rows each: the first point broken by its second row, the second by none
    rows = AttackResult(torch.arange(6.0).view(6, 1), torch.tensor([False, True, True, False, False, False]), passes=12)
    one = rows.collapse(3)
    assert one.success.tolist() == [True, False]
    assert one.x_adv.view(-1).tolist() == [1.0, 3.0] and one.passes == 12


def test_apgd_t_targets_at_once_is_as_strong_as_in_turn(tiny_model, tiny_data):
    """Each target keeps its own iterations and random start: attacking the 3 targets in one batch breaks
    the same share of points as attacking them in turn (ε where about half survive), and every break is real."""
    from preempt.attacks import apgd_targeted

    x, y = tiny_data
    x, y = x[:100], y[:100]
    r = {a: apgd_targeted(tiny_model, x, y, threat=Linf(0.1), steps=20, n_targets=3, at_once=a,
                          generator=torch.Generator().manual_seed(0)) for a in (1, 3)}
    robust = {a: v.robust.float().mean().item() for a, v in r.items()}
    assert 0.3 < robust[1] < 0.7 and abs(robust[3] - robust[1]) <= 0.05, robust
    for v in r.values():
        assert (Linf(0.1).distance(v.x_adv, x) <= 0.1 + 1e-6).all()
        assert (tiny_model.predict(v.x_adv[v.success]) != y[v.success]).all()


def test_apgd_t_at_once_stops_a_point_at_its_first_success(tiny_model, tiny_data):
    """One photo, all targets in one batch (``at_once=None`` for a single photo): broken at once at a large ε,
    the run stops there (a few passes, not 3 × 20); robust at ε = 0, every target runs every iteration."""
    from preempt.attacks import apgd_targeted

    x, y = tiny_data
    broken = apgd_targeted(tiny_model, x[:1], y[:1], threat=Linf(1.0), steps=20, n_targets=3, at_once=None,
                           generator=torch.Generator().manual_seed(0))
    assert broken.success.item() and broken.passes <= 1 + 3 * 3
    kept = apgd_targeted(tiny_model, x[:1], y[:1], threat=Linf(0.0), steps=20, n_targets=3, at_once=None,
                         generator=torch.Generator().manual_seed(0))
    assert kept.robust.item() and kept.passes == 1 + 3 * 21


def test_linear_order_ranks_targets_by_their_exact_margin_on_a_linear_model():
    """On a linear model the first-order margin over the ℓ∞ ball is exact: (w_y − w_t)·x + b_y − b_t − ε‖w_y − w_t‖₁.
    linear_order ranks the same targets by it, least first."""
    from preempt.attacks.auto_pgd import linear_order
    from preempt.attacks.base import ranked_targets

    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(10, 12, generator=gen), torch.randn(10, generator=gen)

    def model(x):
        return x.flatten(1) @ w.t() + b

    x = torch.rand(4, 1, 3, 4, generator=gen)
    y = model(x).argmax(1)
    targets = ranked_targets(model(x), y, 9)
    got = linear_order(model, x, y, targets, Linf(0.05))
    for i in range(len(x)):
        exact = {t: float((w[y[i]] - w[t]) @ x[i].flatten() + b[y[i]] - b[t] - 0.05 * (w[y[i]] - w[t]).abs().sum())
                 for t in targets[i].tolist()}
        assert got[i].tolist() == sorted(exact, key=exact.get)
        assert sorted(got[i].tolist()) == sorted(targets[i].tolist())  # the same targets, reordered


def test_apgd_t_in_linear_order_is_as_strong_and_counts_its_ranking_passes(tiny_model, tiny_data):
    """order="linear" attacks the same targets (only their order changes): it breaks about the same share of
    points as the reference order, every break is real, and the ranking's passes (one per point and target) are
    counted; a robust point pays every target in either order."""
    from preempt.attacks import apgd_targeted

    x, y = tiny_data
    x, y = x[:100], y[:100]
    r = {o: apgd_targeted(tiny_model, x, y, threat=Linf(0.1), steps=20, n_targets=3, order=o,
                          generator=torch.Generator().manual_seed(0)) for o in ("logits", "linear")}
    robust = {o: v.robust.float().mean().item() for o, v in r.items()}
    assert 0.3 < robust["logits"] < 0.7 and abs(robust["linear"] - robust["logits"]) <= 0.05, robust
    assert (tiny_model.predict(r["linear"].x_adv[r["linear"].success]) != y[r["linear"].success]).all()
    kept = {o: apgd_targeted(tiny_model, x[:1], y[:1], threat=Linf(0.0), steps=20, n_targets=3, order=o,
                             generator=torch.Generator().manual_seed(0)) for o in ("logits", "linear")}
    assert kept["logits"].passes == 1 + 3 * 21 and kept["linear"].passes == 1 + 3 * 21 + 3
    with pytest.raises(ValueError, match="order"):
        apgd_targeted(tiny_model, x[:1], y[:1], threat=Linf(0.1), order="random")
