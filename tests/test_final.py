"""robustify's final verdict: no claim without it, its own seed, and one robustify for the library and the CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import preempt
from preempt import RobustifyConfig, robustify
from preempt.algorithms.robustify import escalation_stages, precision_used
from preempt.algorithms.robustify import final as final_mod
from preempt.algorithms.robustify.final import FINAL_SEED_OFFSET, Final, final_seed
from preempt.cli import app
from preempt.verdict.check import CHECKS

IMAGENET_CARD_ROBUSTIFY = {  # the ImageNet cards' robustify settings (preempt/models/zoo/efficientnet-lite0.json)
    "inner_loss": "margin-mt", "inner_steps": 2, "inner_targets": 9, "inner_eps_scale": 1.5, "check_apgd_targets": 9,
    "check_apgd_order": "linear", "max_delta": 0.2, "give_up": 8, "check": "strong-once", "least_change": True,
    "settle": 10, "recheck": "final", "final_slack": 0.5}


def _weak(**kw) -> RobustifyConfig:
    """A loop whose own check is one PGD step: it passes photos the final verdict breaks."""
    return RobustifyConfig.of(delta=0.15, eps=0.15, steps=6, inner_steps=2, min_steps=1, check_every=1,
                           check=replace(CHECKS["pgd"], steps=1), **kw)


def test_no_claim_without_the_final_verdict(tiny_model, tiny_data):
    x = tiny_data[0][:24]
    res = robustify(tiny_model, x, config=_weak())
    claims = [r for r in res.images if r.robust]
    assert all(r.checked and r.final == "held" for r in claims)
    assert all(r.final == "" for r in res.images if not r.checked)  # never judged: the loop's check failed
    demoted = [r for r in res.images if r.checked and not r.robust]
    assert demoted and all(r.final not in ("", "held") for r in demoted)  # the weak check's claims it broke
    # the loop alone would have claimed them: the final verdict is what decides
    alone = robustify(tiny_model, x, config=_weak(final=None))
    assert int(alone.robust.sum()) == sum(r.checked for r in res.images) > int(res.robust.sum())
    assert all(r.final == "" for r in alone.images)
    # what the final verdict says of a claim, an independent run of its attacks says too
    v = CHECKS["final"].judge(tiny_model, res.x[res.robust], res.robust.new_tensor(
        [r.label for r in claims], dtype=torch.long), preempt.Linf(0.15), generator=torch.Generator().manual_seed(99))
    assert claims and v.robust.float().mean() >= 0.75


def test_the_final_verdict_has_a_seed_of_its_own(tiny_model, tiny_data, monkeypatch):
    seeds: list[int] = []
    real = final_mod.final_verdict

    def spy(final, models, ys, photos, threat, seed, on=None):
        seeds.append(final_seed(seed))
        return real(final, models, ys, photos, threat, seed, on=on)

    monkeypatch.setattr("preempt.algorithms.robustify.drivers.final_verdict", spy)
    cfg = _weak(seed=7, max_delta=0.3)
    robustify(tiny_model, tiny_data[0][:16], config=cfg)
    loop_seeds = {cfg.seed} | {s.seed for s in escalation_stages(cfg)}
    assert seeds and not set(seeds) & loop_seeds
    assert final_seed(7) == 7 + FINAL_SEED_OFFSET


def test_final_settings_are_validated(tiny_model, tiny_data):
    with pytest.raises(ValueError, match="final"):
        robustify(tiny_model, tiny_data[0][:2], config=RobustifyConfig.of(final=Final(resolution="nowhere")))
    with pytest.raises(ValueError):
        robustify(tiny_model, tiny_data[0][:2], config=RobustifyConfig.of(final=Final(check=replace(CHECKS["final"],
                                                                                                 apgd_steps=0))))
    assert "APGD" in Final().describe().upper() and "file's pixels" in Final().describe()


def test_forced_float32_is_what_the_header_says(monkeypatch):
    cfg = RobustifyConfig.of(inner_loss="margin-mt", loop_precision="bfloat16")
    monkeypatch.setenv("PREEMPT_FORCE_FLOAT32", "1")
    assert precision_used(cfg, "cpu") == "float32"
    monkeypatch.setenv("PREEMPT_FORCE_FLOAT32", "0")
    monkeypatch.setattr("preempt.algorithms.robustify.precision._cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert precision_used(cfg, "cpu") == "bfloat16"
    assert precision_used(cfg.replaced(loop_precision="float32"), "cpu") == "float32"


def test_library_and_cli_write_the_same_pixels_and_verdicts(tmp_path, tiny_data, tiny_model_file):
    """``preempt.robustify(model, x, eps=…)`` resolves the card like ``preempt robustify`` (the ImageNet cards'
    settings on a tiny model): the same photo, seed and budget give the same pixels and verdict."""
    card = json.loads(tiny_model_file.with_suffix(".json").read_text())
    card["robustify"] = IMAGENET_CARD_ROBUSTIFY
    card["threat_model"] = {"norm": "linf", "eps": 0.1, "delta": 0.05}
    (tmp_path / "card.json").write_text(json.dumps(card))
    x = tiny_data[0][3:4]
    (tmp_path / "in").mkdir()
    Image.fromarray((x[0, 0].numpy() * 255).round().astype(np.uint8), "L").save(tmp_path / "in" / "p.png")
    r = CliRunner().invoke(app, ["robustify", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model",
                                 str(tiny_model_file), "--card", str(tmp_path / "card.json"), "--eps", "0.15", "--json"])
    assert r.exit_code in (0, 3), r.output
    doc = json.loads(r.stdout)
    cli_file = doc["files"][0]
    model = preempt.load_model(tiny_model_file, card=tmp_path / "card.json")
    photo = preempt.load_image(tmp_path / "in" / "p.png")
    res = robustify(model, photo, eps=0.15)
    assert res.config["inner_loss"] == "margin-mt" and res.config["max_delta"] == 0.2  # the card, in the library
    assert json.loads(json.dumps(res.config["final"])) == doc["config"]["final"]
    written = np.asarray(Image.open(cli_file["dst"]))
    assert np.array_equal(written, (res.x[0, 0].numpy() * 255).round().astype(np.uint8))
    im = res.images[0]
    m = cli_file["metrics"]
    assert (m["robust"], m["checked"], m["final"], m["delta"], m["passes"]) == (im.robust, im.checked, im.final,
                                                                                im.delta, im.passes)
    assert m["final_margin"] == im.final_margin  # the slack's measure, the same in both
    assert ("robust = final verdict final (3 × apgd-ce-100 + apgd-t-100, slack 0.5 logits) on the file's pixels"
            in r.stderr)


def test_for_model_rules(tiny_model):
    cfg = RobustifyConfig.for_model(tiny_model, eps=0.05)
    assert cfg.eps == 0.05 and cfg.final == Final()
    assert RobustifyConfig.for_model(tiny_model, final=None, max_delta=None).final is None  # None is a value here
    with pytest.raises(TypeError, match="no_such_field"):
        RobustifyConfig.for_model(tiny_model, no_such_field=1)
    with pytest.raises(ValueError, match="check"):
        RobustifyConfig.for_model(tiny_model, check="nonsense")


def _cropping(tiny_model):
    """The tiny network behind a 10 → centre 8 crop (as EfficientNet's 256 → 224)."""
    from preempt.models.wrapper import Classifier, Preprocessing

    pre = Preprocessing(input_size=(8, 8), channels=1, mean=(0.5,), std=(0.5,), policy="crop", resize_size=10)
    return Classifier(tiny_model.net, pre, classes=tiny_model.classes).eval()


def test_budget_maps(tiny_model, tiny_data):
    from preempt.core.budget_map import budget_map, footprint, jnd, taper

    model = _cropping(tiny_model)
    fp = footprint(model, (10, 10))
    assert fp.sum() == 64 and fp[0, 0, 1:9, 1:9].all() and fp[0, 0, 0].sum() == 0  # the centre crop
    t = taper(fp, 2)
    assert t.max() == 1 and t[0, 0, 1, 1] == pytest.approx(1 / 3) and t[0, 0, 2, 2] == pytest.approx(2 / 3)
    assert taper(torch.ones(1, 1, 6, 6), 3).eq(1).all()  # the photo's own border is no edge
    flat, busy = torch.full((1, 1, 9, 9), 0.5), torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    assert jnd(flat).eq(0.25).all() and jnd(busy).min() > 0.9
    assert budget_map("uniform", model, flat) is None
    with pytest.raises(ValueError, match="budget map"):
        budget_map("nope", model, flat)


@pytest.mark.parametrize("kind", ["taper", "taper+jnd"])
def test_the_change_fades_at_the_crop_edge(tiny_model, tiny_data, kind):
    """No hard rectangle: nothing changes where the model does not look, and the change fades towards the edge."""
    from preempt.core.budget_map import budget_map

    model = _cropping(tiny_model)
    x = torch.nn.functional.pad(tiny_data[0][:8], (1, 1, 1, 1), mode="replicate").mul(255).round().div(255)
    res = robustify(model, x, config=RobustifyConfig.of(delta=0.2, eps=0.05, steps=6, budget_map=kind))
    d = (res.x - x).abs()
    assert d[..., 0, :].max() == 0 and d[..., :, -1].max() == 0  # outside the crop
    lim = torch.floor(0.2 * budget_map(kind, model, x) * 255 + 1e-6) / 255
    assert (d <= lim + 1e-6).all() and d[..., 4:6, 4:6].max() > d[..., 1, 1:9].max()
    assert res.robust.any()


def test_apgd_reports_the_closest_margin_it_reached(tiny_model, tiny_data):
    from preempt.attacks.auto_pgd import apgd, apgd_targeted
    from preempt.attacks.base import margin

    x, y = tiny_data[0][:12], tiny_data[1][:12]
    with torch.no_grad():
        clean = margin(tiny_model(x), y)
    for attack in (lambda t: apgd(tiny_model, x, y, threat=t, steps=10, generator=torch.Generator().manual_seed(0)),
                   lambda t: apgd_targeted(tiny_model, x, y, threat=t, steps=10, n_targets=3,
                                           generator=torch.Generator().manual_seed(0))):
        still = attack(preempt.Linf(0.0))  # no room to move: the closest margin is the clean one
        assert torch.allclose(still.closest, clean, atol=1e-5)
        r = attack(preempt.Linf(0.1))
        assert r.closest is not None and bool((r.closest <= clean + 1e-5).all())
        assert bool((r.closest[r.success] < 0).all()) and bool((r.closest[~r.success] >= 0).all())


def test_slack_turns_a_near_miss_into_not_robust(tiny_model, tiny_data):
    x, y = tiny_data[0][:16], tiny_data[1][:16]
    with torch.no_grad():
        ok = tiny_model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    threat = preempt.Linf(0.01)
    plain = final_mod.final_verdict(Final(), [tiny_model], [y], x, threat, seed=0)
    held = plain.robust.nonzero().squeeze(1)
    assert len(held) and plain.closest is not None and bool((plain.closest[held] > 0).all())
    cut = float(plain.closest[held].median())  # half the held photos came nearer than this
    strict = final_mod.final_verdict(Final(slack=cut), [tiny_model], [y], x, threat, seed=0)
    near = held[plain.closest[held] < cut]
    assert len(near) and not strict.robust[near].any() and all(strict.broken_by[i] == "slack" for i in near.tolist())
    far = held[plain.closest[held] >= cut]
    assert strict.robust[far].all()  # the same attacks (same seed): the rest hold as before
    assert "slack 0.5 logits" in Final(slack=0.5).describe()


def test_final_slack_is_a_flat_setting_a_card_may_recommend(tiny_model):
    cfg = RobustifyConfig.of(final_slack=0.5)
    assert cfg.final == Final(slack=0.5) and cfg.flat()["final_slack"] == 0.5
    assert RobustifyConfig.of(**cfg.flat()) == cfg  # the flat names round-trip
    assert cfg.replaced(final=Final()).final.slack == 0.0  # a Final given whole brings its own slack
    assert cfg.replaced(settle=3).final.slack == 0.5
    with pytest.raises(ValueError, match="final_slack"):
        RobustifyConfig.of(final=None, final_slack=0.5)
    with pytest.raises(ValueError, match="final_slack"):
        RobustifyConfig.of(final_slack=-1.0).validate()
    zoo = __import__("pathlib").Path(preempt.__file__).parent / "models" / "zoo"
    for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):  # the ImageNet cards recommend it
        card = json.loads((zoo / f"{name}.json").read_text())["robustify"]
        assert card["final_slack"] == 0.5
        # the tests' copy is the card (its δ cap scaled for the tiny model); the attackers in float32 on every CPU
        assert {k: v for k, v in card.items() if k not in ("note", "max_delta")} == \
            {k: v for k, v in IMAGENET_CARD_ROBUSTIFY.items() if k != "max_delta"}
    model = replace_card(tiny_model, {"robustify": {"final_slack": 0.5}})
    assert RobustifyConfig.for_model(model).final.slack == 0.5
    assert RobustifyConfig.for_model(model, final_slack=0.0).final.slack == 0.0


def replace_card(model, card: dict):
    """``model`` with its card's entries replaced by ``card``'s (a shallow copy of the wrapper)."""
    import copy

    m = copy.copy(model)
    m.card = {**(getattr(model, "card", None) or {}), **card}
    return m
