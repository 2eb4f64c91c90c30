import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from preempt.cli import app
from preempt.pipeline.photos import load_photo, read_meta

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _json(result):
    return json.loads(result.stdout)


def test_robustify_then_verify(tmp_path, photo_dir, tiny_model_file):
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in photo_dir.iterdir()}
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    assert r.exit_code in (0, 3), r.output
    doc = _json(r)
    files = doc["files"]
    assert len(files) == 6 and all(f["status"] in ("robust", "not-robust") for f in files)
    assert sum(f["status"] == "robust" for f in files) >= 4  # the strong check claims fewer than one PGD-20 did (5)
    assert r.exit_code == (0 if all(f["status"] == "robust" for f in files) else 3)  # 3: a photo is not robust
    assert all(0 < f["metrics"]["ssim"] <= 1 for f in files)  # thumbnails get a smaller window, not NaN
    # originals untouched, outputs named NAME.robust.png (NAME.not-robust.png when not robust), within δ as files
    assert {p.name: p.read_bytes() for p in photo_dir.iterdir()} == before
    assert sorted(str(p) for p in out.glob("*.robust.*")) == sorted(f["dst"] for f in files if f["status"] == "robust")
    for f in files:
        src, dst = load_photo(f["src"]), load_photo(f["dst"])
        assert f["dst"].endswith(".robust.png" if f["status"] == "robust" else ".not-robust.png")
        assert src.pixels.shape == dst.pixels.shape
        assert np.abs(src.pixels.astype(int) - dst.pixels.astype(int)).max() <= 0.1 * 255
        assert dst.meta["label"] == f["label"]

    outs = sorted(out.glob("*.png"))
    origs = sorted(photo_dir.glob("*.png"))
    v = run("verify", *outs, *[a for o in origs for a in ("--original", o)], "--model", tiny_model_file, "--json",
            "--report", tmp_path / "r.html")
    assert v.exit_code in (0, 3), v.output
    doc = _json(v)
    s = doc["summary"]
    assert s["verified"] == 6 and s["failed"] == 0
    assert s["robust_accuracy"] > s["original_robust_accuracy"]
    assert v.exit_code == (3 if s["not_robust"] else 0)
    assert doc["attack"]["steps"] == 20 and doc["attack"]["step_size"] == pytest.approx(0.025)
    assert all(i["metrics"]["label_source"] == "original" for i in doc["images"])
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 18 and "Robust accuracy" in html


def test_rerun_skips_existing_and_overwrite_redoes(tmp_path, photo_dir, tiny_model_file):
    out = tmp_path / "out"
    first = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    before = {f["src"]: f["status"] for f in _json(first)["files"]}
    assert "not-robust" in before.values() and first.exit_code == 3  # (the tiny model leaves one photo not robust)
    stamp = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    files = _json(r)["files"]
    assert all(f["status"] == "skipped" for f in files)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    # the rerun says what the first run said: a resumed `robustify && upload` is as safe as the first
    assert r.exit_code == 3
    for f in files:
        assert f["metrics"]["robust"] == (before[f["src"]] == "robust") and f["metrics"]["recorded"] == before[f["src"]]
        assert ("was written robust" in f["error"]) == (before[f["src"]] == "robust")
    assert "skipped, not known robust" in r.stderr and "not known robust" in r.stderr
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json", "--overwrite")
    assert all(f["status"] != "skipped" for f in _json(r)["files"])


def test_a_skipped_output_counts_as_robust_only_for_the_settings_it_was_made_for(tmp_path, photo_dir, tiny_model_file):
    out = tmp_path / "out"
    for p in sorted(photo_dir.iterdir())[1:]:
        p.unlink()  # one photo, which the tiny model makes robust
    assert run("robustify", photo_dir, "-o", out, "--model", tiny_model_file).exit_code == 0
    assert run("robustify", photo_dir, "-o", out, "--model", tiny_model_file).exit_code == 0
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--eps", 0.2, "--json")
    assert r.exit_code == 3, r.output
    (f,) = _json(r)["files"]
    assert f["status"] == "skipped" and not f["metrics"]["robust"] and "other settings (eps 0.1)" in f["error"]
    # a file at the output name that preempt did not write (or wrote before it recorded verdicts)
    (dst,) = out.iterdir()
    Image.open(dst).save(dst)  # the same pixels, no record
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    assert r.exit_code == 3 and "no record of robustify's verdict" in _json(r)["files"][0]["error"]


def test_bad_files_are_reported_and_the_batch_goes_on(tmp_path, photo_dir, tiny_model_file):
    (photo_dir / "broken.png").write_bytes(b"not an image at all")
    (photo_dir / "empty.jpg").write_bytes(b"")
    r = run("robustify", photo_dir, tmp_path / "nope.png", "-o", tmp_path / "out", "--model", tiny_model_file, "--json")
    assert r.exit_code == 1
    files = _json(r)["files"]
    failed = {f["src"].split("/")[-1]: f["error"] for f in files if f["status"] == "failed"}
    assert set(failed) == {"broken.png", "empty.jpg"}
    assert sum(f["status"] != "failed" for f in files) == 6
    assert "nope.png: no such file" in r.stderr.replace("\n", "")
    assert "Traceback" not in r.output


def test_output_dir_inside_input_is_not_reprocessed_and_inputs_never_overwritten(tmp_path, photo_dir, tiny_model_file):
    out = photo_dir / "out"
    assert run("robustify", photo_dir, "-o", out, "--model", tiny_model_file).exit_code in (0, 3)  # 3: one not robust
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    assert len(_json(r)["files"]) == 6  # the outputs under photo_dir/out are not inputs
    # a robustified file given as input with -o its own folder would be overwritten: refused
    target = next(out.glob("img0.*.png"))  # img0.robust.png, or img0.not-robust.png
    r = run("robustify", target, "-o", out, "--model", tiny_model_file, "--json", "--overwrite")
    files = _json(r)["files"]
    assert files[0]["status"] == "failed" or files[0]["dst"] != str(target)


def test_unwritable_output_is_one_line_error(tmp_path, photo_dir, tiny_model_file):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run("robustify", photo_dir / "img0.png", "-o", blocker / "sub", "--model", tiny_model_file, "--json")
    assert r.exit_code == 1
    assert "cannot write" in _json(r)["files"][0]["error"]
    assert "Traceback" not in r.output


def test_alpha_passes_through_robustify(tmp_path, tiny_model_file):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(a, "RGBA").save(tmp_path / "in" / "a.png")
    r = run("robustify", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_file)
    assert r.exit_code in (0, 3), r.output  # random pixels: written, maybe not robust
    out = load_photo(next((tmp_path / "out").glob("a.*.png")))
    assert np.array_equal(out.alpha, a[:, :, 3])


def test_jpeg_output_is_verified_after_encoding(tmp_path, photo_dir, tiny_model_file):
    r = run("robustify", photo_dir / "img1.png", "-o", tmp_path / "o", "--model", tiny_model_file, "--format", "jpeg",
            "--json")
    f = _json(r)["files"][0]
    assert f["dst"].endswith(".robust.jpg" if f["status"] == "robust" else ".not-robust.jpg")
    assert "robust_before_encoding" in f["metrics"] and "within_budget" in f["metrics"]
    assert f["status"] == ("robust" if f["metrics"]["robust"] else "not-robust")


def test_verify_exit_code_3_on_a_non_robust_image(tmp_path, photo_dir, tiny_model_file):
    r = run("verify", photo_dir, "--model", tiny_model_file, "--eps", "0.9", "--json")
    assert r.exit_code == 3
    assert _json(r)["summary"]["not_robust"] > 0


def test_usage_errors_exit_2(tmp_path, photo_dir, tiny_model_file):
    assert run("robustify", photo_dir, "--norm", "l7", "--model", tiny_model_file).exit_code == 2
    assert run("robustify", photo_dir, "--format", "gif", "--model", tiny_model_file).exit_code == 2
    assert run("robustify").exit_code == 2
    assert run("verify", photo_dir, "--original", photo_dir / "img0.png", "--model", tiny_model_file).exit_code == 2


def test_bad_model_file(tmp_path, photo_dir, tiny_model_file):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"garbage")
    (tmp_path / "m.json").write_text(tiny_model_file.with_suffix(".json").read_text())
    r = run("robustify", photo_dir, "--model", bad)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "m.safetensors" in r.stderr
    r = run("robustify", photo_dir, "--model", tmp_path / "missing.safetensors")
    assert r.exit_code == 1


def test_models_lists_json():
    r = run("models", "--json")
    assert r.exit_code == 0
    doc = _json(r)
    assert doc["device"] in ("cpu", "cuda")
    names = {m["name"] for m in doc["models"]}
    assert {"fmnist-linf-preempt-d3", "fmnist-l2-preempt-d3", "fmnist-linf-pgdat", "efficientnet-lite0"} <= names, names
    for m in doc["models"]:
        assert m["threat_model"]["norm"] in ("linf", "l2") and m["threat_model"]["eps"] > 0


def test_nothing_to_do_is_said_and_exits_1(tmp_path, photo_dir, tiny_model_file):
    (tmp_path / "empty").mkdir()
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("a.heic", "b.gif", "c.svg"):
        (odd / name).write_bytes(b"x")
    r = run("robustify", tmp_path / "empty", "-o", tmp_path / "o", "--model", tiny_model_file)
    assert r.exit_code == 1 and "no images found" in r.stderr
    r = run("robustify", odd, "-o", tmp_path / "o", "--model", tiny_model_file)
    assert r.exit_code == 1 and ".heic" in r.stderr and ".svg" in r.stderr
    r = run("verify", odd, "--model", tiny_model_file)
    assert r.exit_code == 1 and "no images found" in r.stderr
    # the output folder given as the input: its files are never inputs, so there is nothing to do
    r = run("robustify", photo_dir, "-o", photo_dir, "--model", tiny_model_file)
    assert r.exit_code == 1 and "output folder" in r.stderr
    assert not any(p.name.endswith(".robust.png") for p in photo_dir.iterdir())


def test_outputs_follow_the_umask(tmp_path, photo_dir, tiny_model_file):
    import os

    old = os.umask(0o022)
    try:
        run("robustify", photo_dir / "img0.png", "-o", tmp_path / "o", "--model", tiny_model_file)
    finally:
        os.umask(old)
    assert next((tmp_path / "o").glob("img0.*.png")).stat().st_mode & 0o777 == 0o644


def test_verify_unwritable_report_keeps_the_json_and_size_mismatch_is_one_line(tmp_path, photo_dir, tiny_model_file):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run("verify", photo_dir / "img0.png", "--model", tiny_model_file, "--json", "--report", blocker / "r.html")
    assert r.exit_code == 1 and "cannot write the report" in r.stderr
    assert _json(r)["summary"]["verified"] == 1
    small = tmp_path / "small.png"
    Image.new("L", (5, 5)).save(small)
    r = run("verify", photo_dir / "img0.png", "--original", small, "--model", tiny_model_file, "--json")
    assert r.exit_code == 1 and "internal error" not in r.output and "size" in r.stderr


def test_pairing_by_position_far_beyond_delta_is_warned(tmp_path, photo_dir, tiny_model_file):
    a, b = tmp_path / "x.png", tmp_path / "y.png"
    Image.new("L", (13, 9), 0).save(a)
    Image.new("L", (13, 9), 255).save(b)
    r = run("verify", a, "--original", b, "--model", tiny_model_file, "--json")
    assert r.exit_code in (0, 3), r.output
    assert "paired by position" in r.stderr and "further than the model's δ" in r.stderr
    assert _json(r)["images"][0]["metrics"]["paired_by"] == "position"


def test_a_photo_too_big_for_memory_fails_alone(tmp_path, photo_dir, tiny_model_file, monkeypatch):
    Image.new("L", (4000, 3000), 128).save(photo_dir / "huge.png")
    monkeypatch.setenv("PREEMPT_MEMORY_LIMIT", "1G")
    r = run("robustify", photo_dir, "-o", tmp_path / "o", "--model", tiny_model_file, "--json")
    assert r.exit_code == 1
    files = {f["src"].split("/")[-1]: f for f in _json(r)["files"]}
    assert files["huge.png"]["status"] == "failed" and "GB of memory" in files["huge.png"]["error"]
    assert sum(f["status"] in ("robust", "not-robust") for f in files.values()) == 6


def test_settle_inner_loss_and_retry_reach_the_config(tmp_path, photo_dir, tiny_model_file):
    r = run("robustify", photo_dir, "-o", tmp_path / "out", "--model", tiny_model_file, "--json", "--steps", "6",
            "--settle", "2", "--inner-loss", "ce+dlr-t", "--retry", "rmsprop")
    assert r.exit_code in (0, 3), r.output
    cfg = _json(r)["config"]
    assert cfg["settle"] == 2 and cfg["inner_loss"] == "ce+dlr-t" and cfg["retry"] == "rmsprop"
    assert cfg["init"] in ("original", "descent", "random")
    assert run("robustify", photo_dir, "-o", tmp_path / "o2", "--model", tiny_model_file, "--settle", "-1").exit_code == 2
    r = run("robustify", photo_dir, "-o", tmp_path / "o3", "--model", tiny_model_file, "--norm", "l2", "--retry", "rmsprop")
    assert r.exit_code == 2 and "retry" in r.output and not (tmp_path / "o3").exists()


def test_budgets_as_fractions_and_echoed_as_written(tmp_path, photo_dir, tiny_model_file):
    from preempt.budget import format_budget, parse_budget

    assert parse_budget("1/255") == pytest.approx(1 / 255) and parse_budget("0.1") == 0.1 and parse_budget(2) == 2.0
    assert [format_budget(v) for v in (1 / 255, 4 / 255, 0.5 / 255, 0.1, 1.5)] == ["1/255", "4/255", "0.5/255", "0.1", "1.5"]
    for bad in ("abc", "1/0", "-1", "nan", "1/2/3"):
        with pytest.raises(ValueError):
            parse_budget(bad)
    r = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "o", "--model", tiny_model_file, "--eps", "26/255",
            "--delta", "0.1", "--steps", "2", "--json")
    assert r.exit_code in (0, 3), r.output
    assert "δ=0.1 ε=26/255" in r.stderr
    assert _json(r)["config"]["eps"] == pytest.approx(26 / 255)
    v = run("verify", tmp_path / "o", "--model", tiny_model_file, "--eps", "26/255", "--suite", "pgd")
    assert "ε=26/255" in v.stderr, v.output
    bad = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "p", "--model", tiny_model_file, "--eps", "1/x")
    assert bad.exit_code == 2 and "not a budget" in bad.output and not (tmp_path / "p").exists()


def test_a_photo_that_is_not_robust_is_not_named_robust(tmp_path, photo_dir, tiny_model_file):
    out = tmp_path / "o"
    # ε far beyond δ: nothing can be robust; every output is NAME.not-robust.png, none matches *.robust.*
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--eps", "0.5", "--delta", "0.01",
            "--steps", "2", "--json")
    assert r.exit_code == 3
    files = _json(r)["files"]
    assert all(f["status"] == "not-robust" and f["dst"].endswith(".not-robust.png") for f in files)
    assert not list(out.glob("*.robust.*")) and len(list(out.glob("*.not-robust.png"))) == 6
    # a rerun skips them and still says not robust
    again = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--eps", "0.5", "--delta", "0.01",
                "--steps", "2", "--json")
    assert again.exit_code == 3 and all(f["status"] == "skipped" for f in _json(again)["files"])
    # --overwrite with settings that work: the robust output replaces the not-robust one (never both)
    fixed = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--overwrite", "--json")
    for f in _json(fixed)["files"]:
        stem = f["src"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        assert [p.name for p in out.glob(f"{stem}.*")] == [f["dst"].rsplit("/", 1)[1]]
    assert {f["dst"] for f in _json(fixed)["files"] if f["status"] == "robust"} == {str(p) for p in out.glob("*.robust.*")}
    # verify pairs NAME.not-robust.png with its original by name too
    v = run("verify", out, "--original", photo_dir, "--model", tiny_model_file, "--suite", "pgd", "--json")
    assert v.exit_code in (0, 3) and _json(v)["summary"]["verified"] == 6


def test_card_recommendations_flags_and_several_models(tmp_path, photo_dir, tiny_model, tiny_model_file):
    card = json.loads(tiny_model_file.with_suffix(".json").read_text())
    card["robustify"] = {"inner_loss": "margin-mt", "inner_targets": 2, "inner_steps": 2, "max_delta": 0.2, "init": "original",
                         "check_resolution": "full", "give_up": 3, "loop_precision": "bfloat16",
                         "least_change": True, "check": "strong-once", "check_apgd_order": "linear"}
    (tmp_path / "card.json").write_text(json.dumps(card))
    r = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "a", "--model", tiny_model_file, "--card",
            tmp_path / "card.json", "--steps", "4", "--json")
    assert r.exit_code in (0, 3), r.output
    cfg = _json(r)["config"]
    assert (cfg["inner_loss"], cfg["inner_targets"], cfg["inner_steps"], cfg["max_delta"]) == ("margin-mt", 2, 2, 0.2)
    assert cfg["give_up"] == 3 and cfg["loop_precision"] == "bfloat16" and "(2 targets) in bfloat16" in r.stderr
    assert cfg["least_change"] and ", least change" in r.stderr and "check strong-once" in r.stderr
    assert cfg["check"]["apgd_order"] == "linear"  # the card's order of the check's APGD-T targets
    assert "check strong-once (APGD-T targets by first-order margin)" in r.stderr
    assert cfg["check_resolution"] == "full" and "at full resolution" in r.stderr
    assert "inner loss margin-mt (2 targets)" in r.stderr and "δ up to 0.2 (next δ after 3 steps" in r.stderr
    # flags win over the card
    r = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "b", "--model", tiny_model_file, "--card",
            tmp_path / "card.json", "--steps", "4", "--inner-loss", "ce", "--inner-steps", "3", "--max-delta", "1/10",
            "--give-up", "0", "--no-least-change", "--check", "strong", "--json")
    cfg = _json(r)["config"]
    assert not cfg["least_change"] and "check strong (APGD-T targets by first-order margin) at" in r.stderr
    assert (cfg["inner_loss"], cfg["inner_steps"], cfg["max_delta"], cfg["give_up"]) == ("ce", 3, 0.1, 0)
    assert cfg["loop_precision"] == "float32"  # the card's precision was its attackers': --inner-loss ce has none
    # the cap is part of what an output's verdict is for: a rerun with another cap does not take it as robust
    again = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "b", "--model", tiny_model_file, "--card",
                tmp_path / "card.json", "--steps", "4", "--inner-loss", "ce", "--inner-steps", "3", "--max-delta", "0.2")
    assert again.exit_code == 3 and "max_delta" in again.stderr
    # ... and so is the ball its check attacked (the model input is not the file's pixels)
    other = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "b", "--model", tiny_model_file, "--card",
                tmp_path / "card.json", "--steps", "4", "--inner-loss", "ce", "--inner-steps", "3", "--max-delta", "1/10",
                "--check-resolution", "model")
    assert other.exit_code == 3 and "check_resolution" in other.stderr
    bad = run("robustify", photo_dir / "img0.png", "-o", tmp_path / "c", "--model", tiny_model_file, "--max-delta", "0.01")
    assert bad.exit_code == 2 and "max_delta" in bad.output
    # two models at once: robust for both, the record names both, a rerun with one model does not count it robust
    r = run("robustify", photo_dir, "-o", tmp_path / "d", "--model", tiny_model_file, "--model", tiny_model_file,
            "--steps", "6", "--json")
    assert r.exit_code in (0, 3), r.output
    doc = _json(r)
    assert doc["model"] == "tiny+tiny" and "model tiny+tiny" in r.stderr
    robust = [f for f in doc["files"] if f["status"] == "robust"]
    assert robust and all(read_meta(f["dst"])["model"] == "tiny+tiny" for f in robust)
    again = run("robustify", photo_dir, "-o", tmp_path / "d", "--model", tiny_model_file, "--json")
    assert again.exit_code == 3 and "other settings" in again.stderr
    jpeg = run("robustify", photo_dir, "-o", tmp_path / "e", "--model", tiny_model_file, "--model", tiny_model_file,
               "--format", "jpeg")
    assert jpeg.exit_code == 2 and "several models" in jpeg.output


def test_interrupted_run_reports_what_it_finished(tmp_path, photo_dir, tiny_model_file, monkeypatch):
    """Ctrl-C (or `kill`) in the second batch: the first batch's photos still get their table and JSON, then the
    interrupt goes on (exit 130 from main); a rerun resumes."""
    import preempt.pipeline.robustify_job as job

    real, calls = job.robustify, []

    def robustify_then_interrupt(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(job, "robustify", robustify_then_interrupt)
    out, saved = tmp_path / "out", tmp_path / "run.json"
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--save-json", saved)
    assert r.exit_code == 130 and "rerun the same command to resume" in r.stderr, r.output
    assert "interrupted: " in r.stderr  # the table of what was finished
    doc = json.loads(saved.read_text())
    assert doc["interrupted"] is True and len(calls) == 2
    written = sorted(p.name for p in out.iterdir())
    assert 0 < len(doc["files"]) == len(written) < 6  # the first batch only, each row a file on disk
    assert sorted(map(lambda f: f["dst"].rsplit("/", 1)[1], doc["files"])) == written
    monkeypatch.setattr(job, "robustify", real)
    r = run("robustify", photo_dir, "-o", out, "--model", tiny_model_file, "--json")
    assert sum(f["status"] == "skipped" for f in _json(r)["files"]) == len(written)


def test_robustify_seconds_are_per_photo(tmp_path, tiny_data, tiny_model_file):
    """``seconds``: from the batch's start until the photo was done, so within a batch it grows with the outer steps
    the photo took (not the batch's time shared out equally)."""
    d = tmp_path / "four"
    d.mkdir()
    for i in (0, 2, 3, 5):  # at δ 0.2, ε 0.25 these four finish at different outer steps (10, 30, 10, 25)
        Image.fromarray((tiny_data[0][i, 0].numpy() * 255).round().astype(np.uint8), "L").save(d / f"p{i}.png")
    r = run("robustify", d, "-o", tmp_path / "out", "--model", tiny_model_file, "--json", "--delta", "0.2", "--eps", "0.25")
    ms = [f["metrics"] for f in _json(r)["files"]]
    assert len(ms) == 4 and all(m["seconds"] > 0 for m in ms)
    loop = lambda m: m["seconds"] - m["final_seconds"]  # the final verdict's share comes after the loop
    by_steps = sorted(ms, key=lambda m: (m["steps"], loop(m)))
    assert [loop(m) for m in by_steps] == sorted(loop(m) for m in ms)
    assert len({m["steps"] for m in ms}) > 1 and len({m["seconds"] for m in ms}) > 1, ms
