"""The benchmarks' harness (benchmarks/harness.py): its batched robustify runner gives what one call gives."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from preempt import robustify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness


def test_robustify_batched_joins_what_one_call_writes(tiny_model, tiny_data):
    x = tiny_data[0][:6]
    kw = dict(eps=0.05, delta=0.1, steps=6, seed=3)
    parts = [robustify(tiny_model, x[:4], **kw), robustify(tiny_model, x[4:], **kw)]
    images = parts[0].images + parts[1].images
    run = harness.robustify_batched(tiny_model, x, batch=4, **kw)  # batches of 4 and 2
    assert torch.equal(run.x, torch.cat([p.x for p in parts]))
    assert run.claims == [im.robust for im in images] and len(run.images) == 6
    assert run.passes == sum(im.passes for im in images) and run.seconds > 0


def test_stamp_names_the_machine_and_the_revision():
    s = harness.stamp()
    assert {"command", "machine", "cpu_flags", "threads", "precision", "git"} <= set(s), sorted(s)
    assert "torch" in s["machine"] and s["git"]
