"""Shares of a job (--shard K/N, torchrun): each photo gets what one run gives it, and the merged JSON is the one
run's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_photos
from PIL import Image

from preempt.algorithms.robustify import RobustifyConfig
from preempt.pipeline import VerifyConfig, robustify_files, verify_files
from preempt.pipeline.batching import planned_batches
from preempt.pipeline.merge import MergeError, merge, shard_doc
from preempt.pipeline.shard import Shard, batch_seed, from_env, local_device, parse_shard, resolve, take

_TIMED = ("seconds", "final_seconds")  # wall-clock fields: differ between runs


def test_parse_and_env():
    assert parse_shard("1/4") == Shard(1, 4) and str(parse_shard(" 0 / 2 ")) == "0/2"
    for bad in ("4/4", "1", "-1/2", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert from_env({"RANK": "1", "WORLD_SIZE": "3"}) == Shard(1, 3)
    assert from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None and from_env({}) is None
    assert resolve("0/1") is None and resolve(None, {"RANK": "2", "WORLD_SIZE": "4"}) == Shard(2, 4)
    assert resolve("1/2", {"RANK": "0", "WORLD_SIZE": "4"}) == Shard(1, 2)  # the flag wins
    assert local_device("cuda", {"LOCAL_RANK": "3"}) == "cuda:3" and local_device("cpu", {"LOCAL_RANK": "3"}) == "cpu"
    assert Shard(1, 2).path(Path("out/run.json")) == Path("out/run.1-of-2.json")


def test_shares_partition_whole_batches():
    batches = [[0, 1], [2], [3, 4, 5], [6]]
    shares = [take(range(7), Shard(k, 3), lambda _: batches) for k in range(3)]
    assert shares == [[0, 1, 6], [2], [3, 4, 5]]
    assert sorted(sum(shares, [])) == list(range(7))
    assert take([5, 6], None, lambda _: 1 / 0) == [5, 6]  # no share: nothing planned
    assert batch_seed(0, ["a.png"]) == batch_seed(0, ["a.png"]) != batch_seed(0, ["b.png"]) != batch_seed(1, ["b.png"])


@pytest.fixture()
def mixed_dir(tmp_path, tiny_data):
    """Ten photos of three sizes and two modes, plus one unreadable file: several batches of batch size 2."""
    d = save_photos(tmp_path / "mixed", tiny_data[0], 10, sizes=[(13, 9), (8, 8), (16, 12)], rgb=lambda i: i % 4 == 1,
                    name="p{i:02d}.png")
    (d / "broken.png").write_bytes(b"not a png")
    return d


def _rows(results, root: Path) -> list[dict]:
    """Results without timings, output paths relative to their folder."""
    out = []
    for r in results:
        d = r.to_dict()
        d["metrics"] = {k: v for k, v in d.get("metrics", {}).items() if k not in _TIMED}
        if "dst" in d:
            d["dst"] = str(Path(d["dst"]).relative_to(root))
        out.append(d)
    return out


def test_robustify_shares_equal_one_run(mixed_dir, tiny_model, tmp_path):
    cfg = RobustifyConfig.of(norm="linf", delta=0.1, eps=0.05, steps=4, inner_steps=2)
    one = robustify_files([mixed_dir], tmp_path / "one", tiny_model, config=cfg, batch_size=2)
    assert len({tuple(b) for b in planned_batches(sorted(mixed_dir.iterdir()), 2)}) >= 5
    shares = [robustify_files([mixed_dir], tmp_path / "sh", tiny_model, config=cfg, batch_size=2, shard=Shard(k, 2))
              for k in range(2)]
    assert all(shares) and {r.src for r in shares[0]}.isdisjoint({r.src for r in shares[1]})
    docs = [(f"s{k}", shard_doc({"model": "tiny", "device": "cpu", "config": {}, "out": "x",
                                 "files": [r.to_dict() for r in res]}, Shard(k, 2), res)) for k, res in enumerate(shares)]
    merged = merge(docs[::-1])["files"]
    assert [r["src"] for r in merged] == [r.src for r in one]  # input order
    from preempt.pipeline.results import FileResult

    assert _rows([FileResult.from_dict(r) for r in merged], tmp_path / "sh") == _rows(one, tmp_path / "one")
    for f in (tmp_path / "one").iterdir():  # the same pixels, bit for bit
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "sh" / f.name)))
    # a rerun of one share resumes: everything it wrote is skipped
    again = robustify_files([mixed_dir], tmp_path / "sh", tiny_model, config=cfg, batch_size=2, shard=Shard(1, 2))
    assert {r.src for r in again} == {r.src for r in shares[1]}
    assert all(r.status in ("skipped", "failed") for r in again)


def _untimed(rows: list[dict]) -> list[dict]:
    return [{**r, "metrics": {k: v for k, v in r.get("metrics", {}).items() if k not in _TIMED}} for r in rows]


def test_verify_shares_equal_one_run(mixed_dir, tiny_model, tmp_path):
    from preempt.pipeline.report import summarize

    cfg = VerifyConfig(norm="linf", eps=0.08, suite="strong-once", steps=5, checks=False)
    one = verify_files([mixed_dir], tiny_model, config=cfg, batch_size=2)
    docs = []
    for k in range(3):
        rep = verify_files([mixed_dir], tiny_model, config=cfg, batch_size=2, shard=Shard(k, 3))
        docs.append((f"s{k}", shard_doc(summarize(rep.files, cfg.describe(), model="tiny", device="cpu"), Shard(k, 3),
                                        rep.files)))
    merged = merge(docs)
    single = summarize(one.files, cfg.describe(), model="tiny", device="cpu")
    assert _untimed(merged["images"]) == _untimed(single["images"]) and merged["summary"] == single["summary"]
    assert 0 < merged["summary"]["robust"] < merged["summary"]["verified"]  # a mix: verdicts were compared
    with pytest.raises(MergeError, match="missing"):
        merge(docs[:2])
    with pytest.raises(MergeError, match="again"):
        merge([docs[0], docs[0], docs[1]])
    with pytest.raises(MergeError, match="not a share"):
        merge([("plain", single)])


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_torchrun_two_cpu_processes_merge_to_one_run(mixed_dir, tiny_model_file, tmp_path):
    """`torchrun --nproc-per-node 2 -m preempt robustify/verify … --save-json`, then `preempt merge`: the single
    run's JSON and files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--model", str(tiny_model_file), "--delta", "0.1", "--eps", "0.05", "--steps", "4", "--check", "pgd",
              "--batch-size", "2", "--device", "cpu"]
    run = lambda args, **kw: subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, **kw)
    one = run([sys.executable, "-m", "preempt", "robustify", str(mixed_dir), "-o", str(tmp_path / "one"), *common,
               "--save-json", str(tmp_path / "one.json")])
    assert one.returncode in (1, 3), one.stderr  # the broken file fails
    tr = run(["torchrun", "--nproc-per-node", "2", "--master-port", "0", "-m", "preempt", "robustify", str(mixed_dir),
              "-o", str(tmp_path / "tr"), *common, "--save-json", str(tmp_path / "tr.json")])
    # a share exits 0 under torchrun (which would stop the other share on its exit 1); merge gives the verdict
    assert tr.returncode == 0 and "so that torchrun lets the other shares finish" in tr.stderr, tr.stderr
    assert sorted(p.name for p in tmp_path.glob("tr.*-of-2.json")) == ["tr.0-of-2.json", "tr.1-of-2.json"], tr.stderr
    m = run([sys.executable, "-m", "preempt", "merge", *map(str, sorted(tmp_path.glob("tr.*-of-2.json")))])
    assert m.returncode == one.returncode, m.stderr
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads(m.stdout)
    strip = lambda rows, root: [{**r, "dst": Path(r["dst"]).name if "dst" in r else None,
                                 "metrics": {k: v for k, v in r.get("metrics", {}).items() if k not in _TIMED}} for r in rows]
    assert strip(a["files"], "one") == strip(b["files"], "tr") and a["config"] == b["config"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "tr").iterdir())
    for f in (tmp_path / "one").iterdir():
        assert f.read_bytes() == (tmp_path / "tr" / f.name).read_bytes()
    vcommon = ["--model", str(tiny_model_file), "--eps", "0.05", "--steps", "5", "--device", "cpu", "--no-checks"]
    v1 = run([sys.executable, "-m", "preempt", "verify", str(tmp_path / "one"), *vcommon, "--json"])
    vt = run(["torchrun", "--nproc-per-node", "2", "--master-port", "0", "-m", "preempt", "verify", str(tmp_path / "one"),
              *vcommon, "--save-json", str(tmp_path / "v.json")])
    assert vt.returncode == 0 and v1.returncode in (0, 3), (vt.stderr, v1.stderr)
    vm = run([sys.executable, "-m", "preempt", "merge", str(tmp_path / "v.0-of-2.json"), str(tmp_path / "v.1-of-2.json")])
    assert vm.returncode == v1.returncode, vm.stderr
    va, vb = json.loads(v1.stdout), json.loads(vm.stdout)
    assert _untimed(va["images"]) == _untimed(vb["images"]) and va["summary"] == vb["summary"]
