"""The robustness–accuracy trade-off demonstration (Tsipras et al. 2019): sampled vs closed forms."""
import json

import pytest
from typer.testing import CliRunner

from preempt.bench.tradeoff import closed_forms, tradeoff
from preempt.cli import app


def test_closed_forms_are_the_lectures():
    for d in (50, 400):
        c = closed_forms(d)
        assert c["f_std"]["clean"] > 0.99 and c["f_std"]["robust"] < 0.01
        assert c["f_rob"]["clean"] == c["f_rob"]["robust"] == 0.95
    assert closed_forms(10)["f_rob"]["robust"] == 0.0  # ε = 2η ≥ 1: the attacker flips x₁ too


def test_sampled_accuracies_are_within_one_point_of_the_closed_forms():
    for row in tradeoff((50, 400), n=20_000, seed=3):
        for name in ("f_std", "f_rob"):
            for k in ("clean", "robust"):
                assert row[name][k] == pytest.approx(row[name]["closed_form"][k], abs=0.01), (row["d"], name, k)
        assert row["f_std"]["clean"] > 0.99 and row["f_std"]["robust"] < 0.01
        assert row["f_rob"]["robust"] == pytest.approx(0.95, abs=0.01)


def test_bench_tradeoff_writes_its_table(tmp_path):
    r = CliRunner().invoke(app, ["bench", "tradeoff", "--dims", "64", "--n", "5000", "-o", str(tmp_path / "t"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["d"] == 64 and (tmp_path / "t.md").read_text().count("| 64 |") == 1
    bad = CliRunner().invoke(app, ["bench", "tradeoff", "--dims", "x"])
    assert bad.exit_code == 2
