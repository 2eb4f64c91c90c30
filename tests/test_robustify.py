import pytest
import torch

from preempt import L2, Linf, RobustifyConfig, robustify
from preempt.attacks import pgd


def _grid(x):
    return torch.round(x * 255) / 255


@pytest.mark.parametrize("norm,budget", [("linf", 0.1), ("l2", 0.6)])
def test_robustify_raises_pgd_accuracy_within_budget(tiny_model, tiny_data, norm, budget):
    x, y = tiny_data
    x = _grid(x[:120])
    label = tiny_model.predict(x)
    threat = Linf(budget) if norm == "linf" else L2(budget)
    before = pgd(tiny_model, x, label, threat=threat, generator=torch.Generator().manual_seed(11)).robust.float().mean()
    res = robustify(tiny_model, x, norm=norm, delta=budget, eps=budget, seed=0)
    after = pgd(tiny_model, res.x, label, threat=threat, generator=torch.Generator().manual_seed(11)).robust.float().mean()
    assert after >= before + 0.2, (before, after)
    assert after > 0.9
    # on the 8-bit grid and inside the δ-ball
    assert torch.allclose(res.x * 255, torch.round(res.x * 255), atol=1e-4)
    assert (threat.distance(res.x, x) <= budget + 1e-6).all()
    # what it reports robust survives an independent PGD run (other random start) almost always
    rep = res.robust
    again = pgd(tiny_model, res.x, label, threat=threat, generator=torch.Generator().manual_seed(99)).robust
    assert (again[rep]).float().mean() > 0.95


def test_per_image_report_and_early_stop(tiny_model, tiny_data):
    x, _ = tiny_data
    x = _grid(x[:40])
    res = robustify(tiny_model, x, steps=20, min_steps=2, check_every=2)
    assert len(res.images) == 40
    r = res.images[0]
    assert set(r.to_dict()) == {"robust", "label", "loss", "steps", "passes", "linf", "l2", "psnr", "ssim", "scale", "uploads",
                               "checked", "final", "final_seconds", "final_margin", "seconds", "delta"}
    steps = torch.tensor([i.steps for i in res.images])
    # robust images stop early: fewer outer steps than the maximum, and fewer passes than all 20 steps and the check
    assert steps[res.robust].max() < 20
    full = robustify(tiny_model, x, steps=20, early_stop=False)
    mean = lambda r: sum(i.passes for i in r.images if i.robust) / int(r.robust.sum())
    assert mean(res) < mean(full)


def test_given_labels_are_used(tiny_model, tiny_data):
    x, y = tiny_data
    x = _grid(x[:10])
    wrong = (tiny_model.predict(x) + 1) % 4
    res = robustify(tiny_model, x, wrong, steps=3)
    assert [i.label for i in res.images] == wrong.tolist()


def test_zero_steps_returns_the_original_checked(tiny_model, tiny_data):
    x, _ = tiny_data
    x = _grid(x[:10])
    res = robustify(tiny_model, x, steps=0)
    assert torch.equal(res.x, x)
    assert all(i.steps == 0 for i in res.images)


def test_paper_configuration_runs_within_budget(tiny_model, tiny_data):
    """The published algorithm (RMSprop on a tanh box from a random start) as a baseline."""
    from preempt import RobustifyConfig

    x, _ = tiny_data
    x = _grid(x[:20])
    cfg = RobustifyConfig.paper(steps=4, inner_steps=3, final=None)  # the loop's own budget (no final verdict)
    assert cfg.optimizer == "rmsprop" and cfg.init == "random" and not cfg.early_stop
    res = robustify(tiny_model, x, config=cfg)
    assert (Linf(0.1).distance(res.x, x) <= 0.1 + 1e-6).all()
    assert all(i.steps == 4 for i in res.images)
    assert all(16 < i.passes <= 4 * 4 + 21 for i in res.images)  # 4 × (3 inner + 1) + at most one PGD-20 check
    with pytest.raises(ValueError):
        robustify(tiny_model, x, config=RobustifyConfig.paper(norm="l2", optimizer="rmsprop", steps=1))


def test_init_auto_follows_the_card(tiny_model, tiny_data):
    import copy

    from preempt.algorithms.robustify import resolve_init

    x, _ = tiny_data
    x = x[:12]
    pre = copy.copy(tiny_model)
    pre.card = {**tiny_model.card, "robustify": {"init": "descent"}}
    assert resolve_init("auto", pre) == "descent" and resolve_init("auto", tiny_model) == "original"
    assert resolve_init("random", pre) == "random"
    with pytest.raises(ValueError, match="unknown init"):
        resolve_init("sideways", tiny_model)
    d = robustify(tiny_model, x, config=RobustifyConfig(steps=0, init="descent"))
    o = robustify(tiny_model, x, config=RobustifyConfig(steps=0, init="original"))
    # the descent start moved the images within δ, down the loss of their own labels
    assert (Linf(0.1).distance(d.x, x) <= 0.1 + 1e-6).all() and (d.x != x).any()
    y = tiny_model.predict(x)
    ce = torch.nn.functional.cross_entropy
    assert ce(tiny_model(d.x), y) < ce(tiny_model(o.x), y)


def test_settle_takes_extra_steps_after_the_first_pass(tiny_model, tiny_data):
    x, _ = tiny_data
    x = _grid(x[:40])
    res = robustify(tiny_model, x, steps=20, min_steps=2, check_every=2, settle=3)
    won = res.robust
    assert won.any()
    steps = torch.tensor([i.steps for i in res.images])
    assert (steps[won] >= 2 + 3).all()  # first check at step 2, then 3 more steps before the second
    with pytest.raises(ValueError, match="settle"):
        robustify(tiny_model, x, settle=-1)


def test_settle_keeps_the_first_verified_photo_when_the_second_check_fails(tiny_model, tiny_data, monkeypatch):
    from preempt.algorithms.robustify import loop as module

    x, _ = tiny_data
    x = _grid(x[:40])
    first: list[tuple[torch.Tensor, torch.Tensor]] = []
    check = module.Problem.check

    def only_first_passes(self, photo, y, gen, extra_restarts=0):
        ok, p, det = check(self, photo, y, gen, extra_restarts)
        if first:
            ok = torch.zeros_like(ok)
        first.append((photo.clone(), ok.clone()))
        return ok, p, det

    monkeypatch.setattr(module.Problem, "check", only_first_passes)
    for goal in ("strongest", "least-visible"):  # least-visible shrinks from the restored, verified variable
        first.clear()
        res = robustify(tiny_model, x, steps=12, min_steps=2, check_every=1, settle=2, goal=goal)
        photos, ok = first[0]
        assert ok.any()
        assert int(res.robust.sum()) == int(ok.sum())  # nothing else passed; the first passes stay robust
        for q in photos[ok]:  # each first verified photo is what was written, not the later unverified one
            assert any(torch.equal(q, r) for r in res.x[res.robust])
    with pytest.raises(ValueError, match="early_stop"):
        robustify(tiny_model, x, settle=2, early_stop=False)


def test_targeted_inner_loss_alternates_and_defends(tiny_model, tiny_data, monkeypatch):
    from preempt.algorithms.robustify import loop as module
    from preempt.attacks import apgd_targeted

    x, _ = tiny_data
    x = _grid(x[:60])
    label = tiny_model.predict(x)
    threat = Linf(0.1)
    losses_used = []
    unrolled = module.pgd_unrolled

    def recording(*args, loss="ce", **kw):
        losses_used.append(loss)
        return unrolled(*args, loss=loss, **kw)

    monkeypatch.setattr(module, "pgd_unrolled", recording)
    res = robustify(tiny_model, x, delta=0.1, eps=0.1, inner_loss="ce+dlr-t", steps=6, early_stop=False)
    # odd outer steps attack with CE, even ones with a targeted loss
    assert [u == "ce" for u in losses_used] == [True, False] * 3
    monkeypatch.setattr(module, "pgd_unrolled", unrolled)
    plain = robustify(tiny_model, x, delta=0.1, eps=0.1, steps=6, early_stop=False)
    assert not torch.equal(plain.x, res.x)
    res = robustify(tiny_model, x, delta=0.1, eps=0.1, inner_loss="ce+dlr-t", steps=12, min_steps=2, check_every=2)
    assert (threat.distance(res.x, x) <= 0.1 + 1e-6).all()
    gen = torch.Generator().manual_seed(5)
    before = apgd_targeted(tiny_model, x, label, threat=threat, generator=gen).robust.float().mean()
    after = apgd_targeted(tiny_model, res.x, label, threat=threat, generator=gen).robust
    assert after.float().mean() >= before + 0.2
    with pytest.raises(ValueError, match="inner_loss"):
        robustify(tiny_model, x, inner_loss="dlr")


def test_retry_reruns_only_the_unverified_with_rmsprop(tiny_model, tiny_data, monkeypatch):
    from preempt.algorithms.robustify import loop as module

    x, _ = tiny_data
    x = _grid(x[:60])
    label = tiny_model.predict(x)
    kw = dict(delta=0.08, eps=0.15, steps=6, min_steps=2, check_every=2)  # ε > δ: some images are not verified
    first = robustify(tiny_model, x, **kw)
    assert 0 < int(first.robust.sum()) < len(x)
    optimizers = []
    rmsprop = module.TanhRMSprop

    def recording(prob, cfg, start):
        optimizers.append(len(start))
        return rmsprop(prob, cfg, start)

    monkeypatch.setattr(module, "TanhRMSprop", recording)
    res = robustify(tiny_model, x, retry="rmsprop", **kw)
    assert optimizers == [int((~first.robust).sum())]  # one second run, on the unverified images only
    won = first.robust
    assert torch.equal(res.x[won], first.x[won])  # verified photos are untouched
    assert (res.robust >= won).all()
    for a, b in zip(first.images, res.images):  # a retried image counts both runs
        assert b.passes > a.passes if not a.robust else b.passes == a.passes
    again = res.robust & ~won
    assert again.any()  # the retry verified something the first loop could not
    assert (Linf(0.08).distance(res.x, x) <= 0.08 + 1e-6).all()
    assert pgd(tiny_model, res.x[again], label[again], threat=Linf(0.15),
               generator=torch.Generator().manual_seed(99)).robust.all()
    with pytest.raises(ValueError, match="retry"):
        robustify(tiny_model, x, norm="l2", delta=0.5, eps=0.5, retry="rmsprop")


def test_persistent_multi_target_inner_attack_defends_and_counts_its_passes(tiny_model, tiny_data):
    from preempt.attacks import apgd_targeted

    x, _ = tiny_data
    x = _grid(x[:60])
    label = tiny_model.predict(x)
    threat = Linf(0.1)
    kw = dict(delta=0.1, eps=0.1, inner_loss="margin-mt", inner_targets=3, inner_steps=2, steps=4, early_stop=False)
    res = robustify(tiny_model, x, **kw)
    # 4 outer steps × (3 targets × 2 steps + 1 ranking pass), then one check
    assert all(i.passes > 4 * 7 and i.steps == 4 for i in res.images)
    plain = robustify(tiny_model, x, **{**{k: v for k, v in kw.items() if k != "inner_targets"}, "inner_loss": "ce",
                                        "inner_steps": 10})  # (inner_targets is the persistent attackers' setting)
    assert not torch.equal(plain.x, res.x)
    res = robustify(tiny_model, x, **{**kw, "steps": 12, "early_stop": True, "min_steps": 2, "check_every": 2})
    assert (threat.distance(res.x, x) <= 0.1 + 1e-6).all()
    gen = torch.Generator().manual_seed(5)
    before = apgd_targeted(tiny_model, x, label, threat=threat, generator=gen).robust.float().mean()
    after = apgd_targeted(tiny_model, res.x, label, threat=threat, generator=gen).robust
    assert after.float().mean() >= before + 0.2
    assert after[res.robust].float().mean() > 0.9  # its claims hold against an attack it never ran
    # the attackers in bfloat16 (where the CPU runs it natively; float32 elsewhere): the check stays float32
    bf = robustify(tiny_model, x, **{**kw, "steps": 12, "early_stop": True, "min_steps": 2, "check_every": 2,
                                     "loop_precision": "bfloat16"})
    assert bf.config["loop_precision"] == "bfloat16" and (threat.distance(bf.x, x) <= 0.1 + 1e-6).all()
    held = apgd_targeted(tiny_model, bf.x, label, threat=threat, generator=torch.Generator().manual_seed(5)).robust
    assert held[bf.robust].float().mean() > 0.9 and held.float().mean() >= before + 0.2
    from preempt.algorithms.robustify import bfloat16_native, loop_autocast

    ctx = loop_autocast("bfloat16", torch.device("cpu"))
    assert ctx._enabled == bfloat16_native(torch.device("cpu")) and not loop_autocast("float32", torch.device("cpu"))._enabled
    with pytest.raises(ValueError, match="loop_precision"):
        robustify(tiny_model, x, inner_loss="margin-mt", loop_precision="float16")
    with pytest.raises(ValueError, match="loop_precision"):
        robustify(tiny_model, x, inner_loss="ce", loop_precision="bfloat16")
    with pytest.raises(ValueError, match="margin-mt"):
        robustify(tiny_model, x, inner_loss="margin-mt", survive="jpeg:90")
    with pytest.raises(ValueError, match="inner_targets"):
        robustify(tiny_model, x, inner_loss="margin-mt", inner_targets=0)


def test_delta_escalation_spends_more_only_where_needed(tiny_model, tiny_data):
    x, _ = tiny_data
    x = _grid(x[:60])
    kw = dict(eps=0.15, steps=6, min_steps=2, check_every=2)
    small = robustify(tiny_model, x, delta=0.04, **kw)
    assert 0 < int(small.robust.sum()) < len(x)
    esc = robustify(tiny_model, x, delta=0.04, max_delta=0.16, **kw)
    won = small.robust
    assert torch.equal(esc.x[won], small.x[won])  # robust at the first δ: untouched, δ as given
    assert all(esc.images[i].delta == pytest.approx(0.04) for i in won.nonzero().squeeze(1).tolist())
    assert esc.robust.sum() > small.robust.sum()
    for i, (a, b) in enumerate(zip(small.images, esc.images)):
        assert b.delta in (pytest.approx(0.04), pytest.approx(0.08), pytest.approx(0.16))
        assert Linf(b.delta).distance(esc.x[i:i + 1], x[i:i + 1]).item() <= b.delta + 1e-6  # inside its own δ
        assert b.passes >= a.passes
        if not a.robust and b.robust:
            assert b.delta > 0.04 and b.passes > a.passes
    again = pgd(tiny_model, esc.x, tiny_model.predict(x), threat=Linf(0.15), generator=torch.Generator().manual_seed(99))
    assert again.robust[esc.robust].float().mean() > 0.9
    with pytest.raises(ValueError, match="max_delta"):
        robustify(tiny_model, x, delta=0.1, max_delta=0.05)


def test_a_lower_max_delta_is_the_same_run_cut_short(tiny_model, tiny_data):
    """benchmarks/curve.py --escalation reads the point at d off one run to 4d: an image robust at δ ≤ d
    there gets the very same pixels, δ and passes from a run with max_delta = d (stages keep their seeds)."""
    x, _ = tiny_data
    x = _grid(x[:60])
    kw = dict(eps=0.15, steps=6, min_steps=2, check_every=2, delta=0.04)
    full, cut = robustify(tiny_model, x, max_delta=0.16, **kw), robustify(tiny_model, x, max_delta=0.08, **kw)
    within = torch.tensor([im.robust and im.delta <= 0.08 + 1e-9 for im in full.images])
    assert 0 < int(within.sum()) < int(full.robust.sum())  # some stop by 0.08, some need 0.16
    assert torch.equal(cut.x[within], full.x[within])
    assert torch.equal(cut.robust, within)  # the rest are not robust with max_delta 0.08
    for i in within.nonzero().squeeze(1).tolist():
        assert (cut.images[i].delta, cut.images[i].passes) == (full.images[i].delta, full.images[i].passes)


def test_an_unverified_image_is_written_as_its_best_iterate(tiny_model, tiny_data, monkeypatch):
    from preempt.algorithms.robustify import loop as module
    from preempt.core.quantize import quantize

    x, _ = tiny_data
    x = _grid(x[:30])
    offered = []
    best = module.BestIterate

    class Recording(best):
        def offer(self, idx, k, loss):
            offered.append((k, loss.clone(), self.opt.current(idx).clone()))
            super().offer(idx, k, loss)

    monkeypatch.setattr(module, "BestIterate", Recording)
    res = robustify(tiny_model, x, delta=0.02, eps=0.2, steps=8, early_stop=False)  # ε ≫ δ: nothing verifies
    assert not res.robust.any()
    assert [k for k, *_ in offered] == list(range(1, 9))
    late = [(v, loss) for k, loss, v in offered if k > 5]  # after the warm-up (min_steps)
    at = torch.stack([loss for _, loss in late]).argmin(0)  # the step whose variable is kept, per image
    assert len(set(at.tolist())) > 1  # not always the same step: the last one is not always the best
    kept = torch.stack([late[int(j)][0][i] for i, j in enumerate(at)])
    assert torch.equal(res.x, quantize(kept, x, Linf(0.02)))  # written as the best iterate, quantised in δ
    assert (Linf(0.02).distance(res.x, x) <= 0.02 + 1e-6).all()


def test_several_models_at_once_robust_for_each(tiny_model, tiny_data):
    from conftest import trained_tiny_classifier

    other = trained_tiny_classifier(*tiny_data, seed=1)
    x = _grid(tiny_data[0][:60])
    kw = dict(delta=0.1, eps=0.1, steps=10, min_steps=2, check_every=2)
    one = robustify(tiny_model, x, **kw)
    both = robustify([tiny_model, other], x, **kw)
    assert [i.label for i in both.images] == tiny_model.predict(x).tolist()  # labels: the first model's
    threat = Linf(0.1)
    assert (threat.distance(both.x, x) <= 0.1 + 1e-6).all()
    for m in (tiny_model, other):  # what it claims holds for each model, against its own label on the original
        again = pgd(m, both.x, m.predict(x), threat=threat, generator=torch.Generator().manual_seed(99)).robust
        assert again[both.robust].float().mean() > 0.9
    # robust for the other model too costs passes: both models' inner attacks and checks
    assert sum(i.passes for i in both.images) > sum(i.passes for i in one.images)
    mt = robustify([tiny_model, other], x, inner_loss="margin-mt", inner_targets=3, inner_steps=2, **kw)
    assert mt.robust.float().mean() > 0.5
    with pytest.raises(ValueError, match="several models"):
        robustify([tiny_model, other], x, retry="rmsprop")


def test_give_up_stops_a_hopeless_stage_early_but_never_the_last(tiny_model, tiny_data):
    """give_up = N: an image whose inner attack never failed in its first N outer steps stops there, not
    robust; with δ escalation it moves on to the next δ, and the last δ always runs in full."""
    x, _ = tiny_data
    x = _grid(x[:30])
    kw = dict(delta=0.02, eps=0.3, steps=8, min_steps=2, check_every=2)  # ε ≫ δ: the inner attack always wins
    base, cut = robustify(tiny_model, x, **kw), robustify(tiny_model, x, give_up=3, **kw)
    assert not base.robust.any() and not cut.robust.any()
    assert {im.steps for im in base.images} == {8} and {im.steps for im in cut.images} == {3}
    assert sum(im.passes for im in cut.images) < 0.5 * sum(im.passes for im in base.images)
    last = robustify(tiny_model, x, give_up=3, max_delta=0.02, **kw)  # δ is already the last one
    assert {im.steps for im in last.images} == {8}
    esc = robustify(tiny_model, x, give_up=3, max_delta=0.04, **kw)  # 0.02 given up after 3, 0.04 in full
    assert {im.steps for im in esc.images} == {3 + 8}
    with pytest.raises(ValueError, match="give_up"):
        robustify(tiny_model, x, give_up=-1, **kw)


def test_escalation_steps_on_the_8_bit_grid():
    """escalate: each stage's δ is the last times the factor, in whole 8-bit levels when δ is on that grid (a
    written photo moves in whole levels: 2.83/255 would write as 2/255), at least one level up."""
    from preempt.algorithms.robustify.config import _next_delta

    def schedule(factor: float) -> list[float]:
        d, out = 2 / 255, [2.0]
        while d < 16 / 255 - 1e-9:
            d = min(_next_delta(d, factor), 16 / 255)
            out.append(round(d * 255, 6))
        return out

    assert schedule(2.0) == [2, 4, 8, 16]
    assert schedule(2 ** 0.5) == [2, 3, 4, 6, 8, 11, 16]
    assert schedule(1.01) == list(range(2, 17))  # at least one level up
    assert _next_delta(0.04, 2.0) == pytest.approx(0.08)  # off the grid: the plain product
    with pytest.raises(ValueError, match="escalate"):
        robustify(torch.nn.Identity(), torch.zeros(1, 1, 4, 4), escalate=1.0)


def test_recheck_final_skips_the_second_check_and_falls_back_to_the_first_photo(tiny_model, tiny_data, monkeypatch):
    """recheck="final": a settled photo gets no second check in the loop; the final verdict judges it and, where it
    breaks it, the first verified photo behind it (written if that one holds)."""
    from preempt.algorithms.robustify import drivers
    from preempt.algorithms.robustify import loop as module

    x, _ = tiny_data
    x = _grid(x[:40])
    kw = dict(steps=12, min_steps=2, check_every=1, settle=2, max_delta=0.1)  # one δ: no escalation behind it
    checked: list[torch.Tensor] = []
    check = module.Problem.check

    def recorded(self, photo, y, gen, extra_restarts=0):
        checked.append(photo.clone())
        return check(self, photo, y, gen, extra_restarts)

    monkeypatch.setattr(module.Problem, "check", recorded)
    judged: list[torch.Tensor] = []
    verdict = drivers.final_verdict
    breaks: dict[int, set[int]] = {0: set(), 1: set()}  # call -> images the patched final verdict breaks

    def patched(final, models, ys, photos, threat, seed, on=None):
        fv = verdict(final, models, ys, photos, threat, seed, on=on)
        call = len(judged)
        judged.append(photos.clone())
        for i in breaks.get(call, set()):
            fv.robust[i] = False
            fv.broken_by[i] = f"apgd-t (call {call})"
        return fv

    monkeypatch.setattr(drivers, "final_verdict", patched)
    res = robustify(tiny_model, x, recheck="final", **kw)
    assert res.has_first is not None and res.first is not None and res.has_first.any()
    settled = res.has_first.cpu().nonzero().squeeze(1).tolist()
    held = [i for i in settled if res.images[i].robust]
    assert held
    for i in held:  # the final verdict judged the settled photo, which no check of the loop ever saw, and held it
        assert torch.equal(judged[0][i], res.x[i]) and res.images[i].final == "held"
        assert not any(torch.equal(res.x[i], q) for c in checked for q in c)
    assert len(judged) == 1 + (len(held) < len(settled))  # a second verdict only where a settled photo broke
    assert "rechecked by the final verdict" in RobustifyConfig.of(recheck="final", **kw).describe()

    # now the final verdict breaks every settled photo, and the first photo behind one of them as well
    checked.clear()
    judged.clear()
    breaks[0] = set(settled)
    breaks[1] = {settled[0]}
    res = robustify(tiny_model, x, recheck="final", **kw)
    assert len(judged) == 2
    for i in settled:
        r = res.images[i]
        if i == settled[0]:  # both broken: not robust, the settled photo written, named by what broke it
            assert not r.robust and r.final == "apgd-t (call 0)" and torch.equal(res.x[i], judged[0][i])
        else:  # the first photo held: written, and a check of the loop had passed it
            assert r.robust and r.final == "held" and torch.equal(res.x[i], judged[1][i])
            assert not torch.equal(judged[1][i], judged[0][i])
            assert any(torch.equal(res.x[i], q) for c in checked for q in c)
    with pytest.raises(ValueError, match="recheck"):
        robustify(tiny_model, x, recheck="never")


def test_recheck_final_applies_only_where_the_final_verdict_can_recheck():
    cfg = RobustifyConfig.of(recheck="final", settle=2)
    assert cfg.recheck_by_final
    assert not cfg.replaced(recheck="check").recheck_by_final and not cfg.replaced(settle=0).recheck_by_final
    assert not cfg.replaced(final=None).recheck_by_final and not cfg.replaced(survive="jpeg:90").recheck_by_final
    assert not cfg.replaced(goal="least-visible").recheck_by_final  # it shrinks only a change the loop's check verified
    assert "rechecked" not in cfg.replaced(recheck="check").describe()


def test_a_rerun_brings_its_first_photos_along():
    """Retry and δ escalation merge a rerun's photos into the run before it: with them the first verified photos
    (recheck="final"'s fallback), so the final verdict after a retry can still fall back."""
    from preempt.algorithms.robustify.drivers import _merge_rerun
    from preempt.algorithms.robustify.results import ImageResult, RobustifyResult

    def result(n: int, robust: list[bool], value: float) -> RobustifyResult:
        nan = float("nan")
        images = [ImageResult(robust=r, label=0, loss=0.0, steps=1, passes=10, linf=nan, l2=nan, psnr=nan, ssim=nan,
                              scale=1.0, seconds=1.0) for r in robust]
        return RobustifyResult(torch.full((n, 1, 2, 2), value), images)

    res = result(3, [True, False, False], 0.1)
    sub = result(2, [True, False], 0.5)
    sub.first, sub.has_first = torch.full((2, 1, 2, 2), 0.3), torch.tensor([True, True])
    _merge_rerun(res, torch.tensor([1, 2]), sub)
    assert res.has_first is not None and res.first is not None
    assert res.has_first.tolist() == [False, True, False]  # only the photo the rerun verified
    assert torch.equal(res.first[1], sub.first[0]) and torch.equal(res.x[1], sub.x[0])
    assert res.images[1].passes == 20 and res.images[2].passes == 20
