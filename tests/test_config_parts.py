"""robustify's typed parts: a setting lives in the one variant it means something for."""
from __future__ import annotations

import pytest

from preempt.algorithms.robustify import RobustifyConfig
from preempt.algorithms.robustify.parts import (
    EarlyStop,
    Escalation,
    LeastVisible,
    Persistent,
    Sign,
    Strongest,
    TanhBox,
    Unrolled,
)
from preempt.errors import UsageError


def test_flat_names_build_the_typed_parts_and_come_back():
    cfg = RobustifyConfig.of(inner_loss="margin-mt", inner_targets=9, kappa=2.0, inner_eps_scale=1.5,
                             loop_precision="bfloat16", inner_steps=2, min_steps=2, check_every=3, settle=4)
    assert cfg.inner == Persistent(targets=9, kappa=2.0, eps_scale=1.5, precision="bfloat16", steps=2)
    assert cfg.outer == Sign() and cfg.early_stop == EarlyStop(min_steps=2, check_every=3, settle=4)
    assert RobustifyConfig.of(**cfg.flat()) == cfg
    assert cfg.inner_loss == "margin-mt" and cfg.loop_precision == "bfloat16" and cfg.record()["kappa"] == 2.0
    paper = RobustifyConfig.paper()
    assert paper.inner == Unrolled(steps=20) and paper.outer == TanhBox() and paper.early_stop is None


@pytest.mark.parametrize("flat, says", [
    (dict(inner_loss="ce", kappa=4.0), "kappa is a setting of inner_loss=margin-mt"),
    (dict(inner_loss="margin-mt", create_graph=True), "create_graph is a setting of inner_loss=ce"),
    (dict(optimizer="rmsprop", step_size=0.1), "step_size is a setting of optimizer=sign"),
    (dict(optimizer="sign", lr=0.1), "lr is a setting of optimizer=rmsprop"),
    (dict(early_stop=False, settle=3), "settle: settings of early stopping"),
    (dict(inner_loss="mse"), "inner_loss 'mse'"),
    (dict(escalate=3.0), "escalate is a setting of δ escalation"),
    (dict(shrink_steps=3), "shrink_steps is a setting of goal='least-visible'"),
    (dict(goal="prettiest"), "goal 'prettiest'"),
])
def test_a_setting_the_chosen_variant_lacks_is_refused(flat, says):
    with pytest.raises(UsageError, match=says):
        RobustifyConfig.of(**flat)


def test_replaced_changes_a_part_and_starts_a_new_variant_from_its_defaults():
    cfg = RobustifyConfig.of(inner_loss="margin-mt", inner_targets=9, inner_steps=2)
    assert cfg.replaced(kappa=8.0).inner == Persistent(targets=9, kappa=8.0, steps=2)
    assert cfg.replaced(inner_loss="ce").inner == Unrolled(steps=2)  # the targets were the attackers'
    assert cfg.replaced(early_stop=False).early_stop is None


def test_escalation_and_the_goal_are_parts_too():
    cfg = RobustifyConfig.of(delta=2 / 255, max_delta=16 / 255, escalate=3.0, goal="least-visible", shrink_steps=6)
    assert cfg.escalation == Escalation(max_delta=16 / 255, factor=3.0) and cfg.goal == LeastVisible(shrink_steps=6)
    assert RobustifyConfig.of(**cfg.flat()) == cfg and cfg.record()["max_delta"] == 16 / 255
    assert cfg.replaced(max_delta=None).escalation is None and cfg.replaced(goal="strongest").goal == Strongest()
    assert RobustifyConfig().escalation is None and RobustifyConfig().flat()["max_delta"] is None
    with pytest.raises(UsageError, match="max_delta must be >= delta"):
        RobustifyConfig(delta=0.1, escalation=Escalation(max_delta=0.05)).validate()
    with pytest.raises(UsageError, match="escalate must be"):
        RobustifyConfig.of(max_delta=0.2, escalate=1.0)


def test_for_model_drops_the_cards_settings_of_a_variant_not_chosen(tiny_model):
    card = {"inner_loss": "margin-mt", "loop_precision": "bfloat16", "settle": 4, "max_delta": 0.3}
    tiny_model.card["robustify"], before = card, tiny_model.card.get("robustify")
    try:
        cfg = RobustifyConfig.for_model(tiny_model, inner_loss="ce", early_stop=False)
        assert cfg.inner == Unrolled() and cfg.early_stop is None and cfg.escalation == Escalation(0.3)
        assert RobustifyConfig.for_model(tiny_model).early_stop == EarlyStop(settle=4)
    finally:
        tiny_model.card["robustify"] = before


def test_cross_part_rules_remain_and_say_why():
    with pytest.raises(UsageError, match="sign optimizer"):
        RobustifyConfig(inner=Persistent(), outer=TanhBox()).validate()
    with pytest.raises(UsageError, match="for ℓ2"):
        RobustifyConfig(inner=Unrolled(create_graph=True)).validate()
