"""The pieces the restructure made explicit: the threat model's norm-specific parts, the survivors
bookkeeping, the one suite registry, the typed card's budgets, and what verify now reports."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from preempt import L2, Linf
from preempt.attacks.base import AttackResult, Survivors
from preempt.core.quantize import quantize, quantize_change
from preempt.models.card import budgets
from preempt.verdict.check import CHECKS, PRESETS, SUITES, Check, run_suite
from preempt.vocab import CheckPreset, SuiteName


@pytest.mark.parametrize("ball", [Linf(0.1), L2(0.5)])
def test_sample_sphere_lies_on_the_sphere(ball):
    like = torch.zeros(7, 1, 6, 6)
    d = ball.sample_sphere(like, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ball.size(d), torch.full((7,), ball.eps), atol=1e-5)


def test_separable_is_the_per_pixel_ball_only():
    assert Linf(0.1).separable and not L2(0.1).separable


@pytest.mark.parametrize("ball", [Linf(4 / 255), L2(0.2)])
def test_restored_budget_stays_in_the_ball_and_quantize_change_matches_quantize(ball):
    g = torch.Generator().manual_seed(1)
    x_o = torch.round(torch.rand(5, 3, 8, 8, generator=g) * 255) / 255
    u = (torch.rand(x_o.shape, generator=g) - 0.5) * 0.2
    x_r = ball.project(x_o + u, x_o)
    q = quantize(x_r, x_o, ball)
    assert torch.equal(q, torch.round(q * 255) / 255)                        # on the 8-bit grid
    assert (ball.distance(q, x_o) <= ball.eps + 1e-6).all()                   # inside δ
    assert torch.allclose(quantize_change(x_r - x_o, x_o, ball), q, atol=1e-6)  # the in-place form agrees


def test_survivors_attacks_only_what_is_left_and_names_the_first_break():
    x = torch.arange(4.0).view(4, 1, 1, 1)
    s = Survivors(torch.tensor([True, True, False, True]), x)
    assert s.broken_by == [None, None, "clean", None]
    seen = []

    def fake(succeed):
        def f(idx):
            seen.append(idx.tolist())
            ok = torch.tensor([i in succeed for i in idx.tolist()])
            return AttackResult(x[idx] + 10, ok, passes=len(idx))
        return f

    s.attack("a", fake({1}))
    s.attack("b", fake({0, 1}))
    assert seen == [[0, 1, 3], [0, 3]]
    assert s.broken_by == ["b", "a", "clean", None]
    assert s.robust.tolist() == [False, False, False, True]
    assert s.x_adv[:, 0, 0, 0].tolist() == [10.0, 11.0, 2.0, 3.0]
    assert s.passes == {"a": 3, "b": 2}


def test_the_cli_type_and_the_table_list_the_same_suites_and_presets():
    from typing import get_args

    assert set(get_args(SuiteName)) == set(SUITES) and set(get_args(CheckPreset)) == set(PRESETS)
    assert set(PRESETS) | {c.name for c in SUITES.values()} <= set(CHECKS)  # every name is a Check of the one table
    assert all(c.name == n for n, c in CHECKS.items())
    assert SUITES["pgd"].tuned(steps=7, restarts=3).attacks() == ["pgd-7"] * 3
    assert SUITES["standard"].tuned(steps=7, restarts=3) == SUITES["standard"]  # takes none of verify's PGD flags
    assert SUITES["blackbox"].attacks() == ["square"]
    assert SUITES["blackbox"].attacks(surrogate=object()) == ["square", "transfer-pgd-20", "transfer-apgd-ce"]
    with pytest.raises(ValueError, match="unknown suite"):
        run_suite(None, torch.zeros(1), torch.zeros(1), threat=Linf(0.1), suite="nope")
    with pytest.raises(ValueError, match="check stage 'nope'"):
        Check("x", "ce+nope").validate()
    with pytest.raises(ValueError, match=">= 1"):
        Check("x", "ce", restarts=0).validate()


def test_verify_by_default_runs_the_attacks_of_robustify_default_check(tiny_model, tiny_data):
    """One meaning of "robust": verify's default suite runs the attacks of robustify's default check, APGD from one
    random start where the check runs it from two (a margin, so verify from its own starts agrees)."""
    from preempt import RobustifyConfig, robustify
    from preempt.pipeline.verify_job import VerifyConfig
    from preempt.verdict.check import APGD_STARTS

    cfg = RobustifyConfig()
    assert VerifyConfig().suite == "strong-once" and APGD_STARTS == 2
    assert cfg.check is CHECKS["strong"] and cfg.check.stages == "ce+apgd-ce+apgd-t+apgd-ce+apgd-t"
    once = SUITES["strong-once"]
    assert SUITES["strong"] is CHECKS["strong"]  # one name, one thing, in verify and in robustify
    assert once is CHECKS["strong-once"] and once.stages == "ce+apgd-ce+apgd-t"
    assert (once.restarts, once.apgd_steps, once.apgd_targets) == (cfg.check.restarts, cfg.check.apgd_steps,
                                                                    cfg.check.apgd_targets) == (2, 25, 3)
    assert once.attacks() == ["pgd-20", "pgd-20", "apgd-ce-25", "apgd-t-25"]
    assert cfg.check.attacks() == ["pgd-20", "pgd-20"] + ["apgd-ce-25", "apgd-t-25"] * APGD_STARTS
    x, y = tiny_data
    x, y = x[:24], y[:24]
    t = Linf(0.1)
    ok = once.judge(tiny_model, x, y, t, correct=torch.ones(len(x), dtype=torch.bool),
                    generator=torch.Generator().manual_seed(5)).robust
    r = run_suite(tiny_model, x, y, threat=t, suite="strong-once", workers=1, generator=torch.Generator().manual_seed(5))
    assert 0 < int(ok.sum()) < len(x) and r.robust.tolist() == ok.tolist()  # the same attacks, the same draws
    # robustify's claims hold under verify's default from other random starts
    res = robustify(tiny_model, x, y, config=cfg)
    claimed = res.robust
    v = run_suite(tiny_model, res.x, y, threat=t, suite="strong-once", generator=torch.Generator().manual_seed(1))
    assert claimed.sum() >= 12 and bool((v.robust | ~claimed).all())


def test_run_suite_reports_each_attack_as_it_starts(tiny_model, tiny_data):
    x, y = tiny_data
    calls = []
    r = run_suite(tiny_model, x[:12], y[:12], threat=Linf(0.05), suite="quick", workers=1,
                  generator=torch.Generator().manual_seed(0), on_attack=lambda name, n: calls.append((name, n)))
    assert [c[0] for c in calls] == ["pgd-20", "apgd-ce"]
    assert calls[0][1] == int((tiny_model.predict(x[:12]) == y[:12]).sum())
    assert calls[1][1] == int(r.per_attack["pgd-20"] * 12 + 0.5)


def test_budgets_fill_from_the_card_and_name_the_bad_option():
    card = {"threat_model": {"norm": "l2", "eps": 1.5, "delta": 1.0}}
    assert budgets(card) == ("l2", 1.5, 1.0)
    assert budgets(card, eps=0.5) == ("l2", 0.5, 1.0)
    assert budgets({}) == ("linf", 0.1, 0.1)
    assert budgets({"threat_model": {"eps": 0.2}}) == ("linf", 0.2, 0.2)
    with pytest.raises(ValueError, match="--norm"):
        budgets(card, norm="l7")
    with pytest.raises(ValueError, match="--delta"):
        budgets(card, delta=math.nan)


def test_verify_names_the_label_after_the_attack(tmp_path, photo_dir, tiny_model_file):
    from preempt.cli import app

    report = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["verify", str(photo_dir), "--model", str(tiny_model_file), "--eps", "0.9", "--json",
                                 "--report", str(report)])
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)
    broken = [f for f in doc["images"] if f["metrics"]["broken_by"] not in (None, "clean")]
    assert broken
    for f in broken:
        m = f["metrics"]
        assert m["label_after_attack"] != f["label"]  # the attack changed the answer
        assert m["label_name_after_attack"] in ("a", "b", "c", "d")
    html = report.read_text()
    assert "label after attack" in html and "✓ passed:" in html


@pytest.mark.parametrize("name", ["pgd", "apgd", "apgd-t", "fab-t", "square", "adaptive", "check"])
@pytest.mark.parametrize("ball", [Linf(0.05), L2(0.3)])
def test_each_attack_reports_the_passes_the_model_counted(tiny_model, tiny_data, name, ball):
    """Two counters, one truth: what an attack reports is what Classifier.passes metered."""
    from preempt.attacks import adaptive, apgd, apgd_targeted, fab_targeted, pgd, square
    x, y = tiny_data[0][:10], tiny_data[1][:10]
    g = torch.Generator().manual_seed(0)
    run = {"pgd": lambda: pgd(tiny_model, x, y, threat=ball, generator=g).passes,
           "apgd": lambda: apgd(tiny_model, x, y, threat=ball, steps=10, generator=g).passes,
           "apgd-t": lambda: apgd_targeted(tiny_model, x, y, threat=ball, steps=10, generator=g).passes,
           "fab-t": lambda: fab_targeted(tiny_model, x, y, threat=ball, steps=10).passes,
           "square": lambda: square(tiny_model, x, y, threat=ball, queries=50, generator=g).passes,
           "adaptive": lambda: adaptive(tiny_model, x, y, threat=ball, generator=g).passes,
           "check": lambda: CHECKS["strong-once"].judge(tiny_model, x, y, ball, generator=g).total_passes}[name]
    before = tiny_model.passes
    reported = run()
    assert reported == tiny_model.passes - before > 0


def test_no_hidden_global_state(tmp_path, tiny_model, tiny_data):
    """Reading a photo leaves Pillow's pixel limit alone; a suite with worker threads leaves torch's
    thread count as it found it."""
    import numpy as np
    from PIL import Image

    from preempt.pipeline.photos import load_photo

    limit, threads = Image.MAX_IMAGE_PIXELS, torch.get_num_threads()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "a.png")
    load_photo(tmp_path / "a.png")
    x, y = tiny_data
    run_suite(tiny_model, x[:8], y[:8], threat=Linf(0.05), suite="pgd", workers=2, generator=torch.Generator().manual_seed(0))
    assert Image.MAX_IMAGE_PIXELS == limit and torch.get_num_threads() == threads


def test_robustify_reports_each_outer_step(tiny_model, tiny_data):
    from preempt import robustify

    x = tiny_data[0][:4]
    calls = []
    res = robustify(tiny_model, x, delta=0.1, eps=0.1, steps=6, on_step=lambda k, n, done: calls.append((k, n, done)))
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1)) and all(c[1] == 6 for c in calls)
    assert calls[-1][2] == int(res.robust.sum())  # the last report counts every verified photo
    assert all(a[2] <= b[2] for a, b in zip(calls, calls[1:]))  # verified photos stay verified


@pytest.mark.parametrize("sigma", ["nan", "0", "-1", "inf"])
def test_a_meaningless_smoothing_sigma_is_a_usage_error(tmp_path, photo_dir, tiny_model_file, sigma):
    from preempt.cli import app
    from preempt.defenses.smoothing import Smoothed

    r = CliRunner().invoke(app, ["robustify", str(photo_dir), "-o", str(tmp_path / "out"), "--model",
                                 str(tiny_model_file), "--smoothing-sigma", sigma])
    assert r.exit_code == 2 and "--smoothing-sigma" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(ValueError, match="sigma"):
        Smoothed(None, float(sigma))


def _package_sources():
    import ast
    from pathlib import Path

    root = Path(__import__("preempt").__file__).parent
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text())


def test_the_layout_rules_hold():
    """Static guards of the structure: no Linf/L2 isinstance outside core/threat.py, no private
    name imported from another module, no subpackage re-exporting a function under one of its
    modules' names (which would shadow the module)."""
    import ast
    import importlib
    import pkgutil

    import preempt

    for rel, tree in _package_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and rel != "core/threat.py":
                names = {getattr(n, "id", None) for n in ast.walk(node.args[1])}
                assert not names & {"Linf", "L2"}, f"{rel}:{node.lineno}: isinstance on a threat model"
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{rel}:{node.lineno}: imports private {private} from {node.module}"
    packages = ["preempt"] + [i.name for i in pkgutil.walk_packages(preempt.__path__, "preempt.") if i.ispkg]
    for name in packages:
        pkg = importlib.import_module(name)
        for sub in pkgutil.iter_modules(pkg.__path__):
            attr = getattr(pkg, sub.name, None)
            assert attr is None or type(attr).__name__ == "module", f"{name}.{sub.name} is shadowed by {attr!r}"


# Layers, bottom first: a module may import its own package and anything in a lower layer, never above.
LAYERS = {"errors": -1,
          "models": 0, "data": 0, "budget": 0, "version": 0, "vocab": 0, "core": 1, "attacks": 2, "verdict": 3, "algorithms": 4,
          "defenses": 4, "train": 5, "pipeline": 5, "bench": 6, "cli": 7, "": 8, "__main__": 8}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the preempt modules it imports, function-level imports included."""
    import ast

    root = Path(__import__("preempt").__file__).parent
    mods = {}
    for path in root.rglob("*.py"):
        parts = ("preempt",) + path.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)] if node.level else []
                t = ".".join(base + [node.module] if node.module else base) if node.level else (node.module or "")
                targets = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_point_down_and_form_no_cycle():
    """The package's shape (shared/ARCHITECTURE.md): models < core < attacks < verdict < algorithms,
    defenses < train, pipeline < bench < cli; nothing imports a layer above its own, and no chain of
    imports (function-level ones included) comes back to where it started."""
    graph = _import_graph()
    assert set(map(_layer, graph)) <= set(LAYERS), set(map(_layer, graph)) - set(LAYERS)
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
              if _layer(m) != _layer(t) and LAYERS[_layer(t)] >= LAYERS[_layer(m)]]
    assert not upward, upward
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:  # depth-first; state 1 = on the current path
        state[m] = 1
        for t in sorted(graph[m]):
            assert state.get(t) != 1, "import cycle: " + " -> ".join(path[path.index(t):] + [t])
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_import_guard_sees_an_upward_import_and_a_cycle(monkeypatch):
    """The guard above is not vacuous: a planted upward import and a planted cycle both fail it."""
    real = _import_graph()
    for planted in ({"preempt.core.threat": {"preempt.attacks.base"}},
                    {"preempt.models.byo": {"preempt.models.registry"}}):
        fake = {m: set(ts) | planted.get(m, set()) for m, ts in real.items()}
        monkeypatch.setattr(sys.modules[__name__], "_import_graph", lambda fake=fake: fake)
        with pytest.raises(AssertionError, match="->"):
            test_imports_point_down_and_form_no_cycle()


def test_the_version_is_written_once_in_the_package_and_matches_pyproject():
    import preempt
    from preempt.version import __version__

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((Path(preempt.__file__).parents[1] / "pyproject.toml").read_text())
    assert preempt.__version__ == __version__ == pyproject["project"]["version"]


def test_no_function_is_longer_than_80_lines():
    import ast

    long = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for rel, tree in _package_sources() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert not long, long


def test_vocabularies_are_declared_once_and_match_what_uses_them():
    """preempt.vocab is the one declaration: the check presets are CHECKS' names, the CLI options
    are typed with the vocabularies themselves, and the configs refuse what is not in them."""
    import inspect
    from typing import get_args

    from preempt import RobustifyConfig, vocab
    from preempt.cli.robustify import robustify_cmd
    from preempt.cli.verify import verify_cmd
    from preempt.train import TrainConfig
    assert set(vocab.CHECK_PRESETS) == set(PRESETS) and set(PRESETS) <= set(CHECKS)
    hints = inspect.get_annotations(robustify_cmd, eval_str=True)
    for opt, vocabulary in (("check", vocab.CheckPreset), ("inner_loss", vocab.InnerLoss), ("retry", vocab.Retry),
                            ("init", vocab.Init), ("goal", vocab.Goal), ("resolution", vocab.Resolution),
                            ("fmt", vocab.Format), ("norm", vocab.Norm)):
        assert set(get_args(vocabulary)) <= set(_literal_values(hints[opt])), opt
    assert set(_literal_values(inspect.get_annotations(verify_cmd, eval_str=True)["resolution"])) == set(vocab.RESOLUTIONS)
    for field, bad in (("resolution", "half"), ("goal", "prettiest"), ("init", "zeros"), ("inner_loss", "mse"),
                       ("retry", "adam"), ("optimizer", "adam")):
        with pytest.raises(ValueError):
            RobustifyConfig.of(**{field: bad}).validate()
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")


def _literal_values(tp) -> list:
    """The values of a Literal inside Annotated[... | None, ...]."""
    from typing import Literal, get_args, get_origin

    out: list = []
    for t in (get_args(tp) or (tp,)):
        if get_origin(t) is Literal:
            out += list(get_args(t))
        elif get_args(t):
            out += _literal_values(t)
    return out



def test_a_check_sets_how_many_apgd_t_targets_run_at_once():
    from dataclasses import replace

    c = replace(CHECKS["strong-once"], apgd_targets=9, apgd_at_once=1)
    kws = [kw for label, _, kw in c.runs() if label.startswith("apgd-t")]
    assert kws == [{"steps": 25, "n_targets": 9, "at_once": 1}]
    assert "at_once" not in [kw for label, _, kw in CHECKS["strong-once"].runs() if label.startswith("apgd-t")][0]
    with pytest.raises(ValueError, match="apgd_at_once"):
        replace(c, apgd_at_once=0).validate()
