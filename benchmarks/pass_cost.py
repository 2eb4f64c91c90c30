"""What one classifier pass costs as the batch grows: the basis of APGD-T's targets-at-once batching.

    python benchmarks/pass_cost.py          # → benchmarks/results/pass-cost.{json,md}

A pass is one forward and one backward to the input (what every attack step costs) of
``efficientnet-lite0`` at its 224×224 input, in the model wrapper (preprocessing included), batch
1, 2, 4, 9, 18 and 32, each timed as the median of ``--repeat`` runs after a warm-up, all in one
process, side by side; milliseconds per image, and the ratio to batch 1.  Run it alone: anything
sharing the cores inflates the milliseconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from preempt import load_model

HERE = Path(__file__).resolve().parent


def per_image_ms(model, batch: int, repeat: int, size: int) -> float:
    x = torch.rand(batch, 3, size, size)
    y = torch.zeros(batch, dtype=torch.long)

    def one() -> None:
        xa = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y)
        torch.autograd.grad(loss, xa)

    one()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--batches", default="1,2,4,9,18,32")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "pass-cost.json")
    args = ap.parse_args()
    model = load_model(args.model)
    size = model.pre.input_size[0]
    at = model.at_input_size() if hasattr(model, "at_input_size") else model
    rows = []
    for b in map(int, args.batches.split(",")):
        ms = per_image_ms(at, b, args.repeat, size)
        rows.append({"batch": b, "ms_per_image": round(ms, 2)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["ms_per_image"]
    for r in rows:
        r["speedup_vs_batch_1"] = round(base / r["ms_per_image"], 2)
    out = {"command": "python " + " ".join(sys.argv), "model": args.model, "input": size,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# One forward + backward pass of {args.model} ({size}×{size}) per image, by batch size", "",
             f"`{out['command']}` on {out['machine']}; median of {args.repeat} after a warm-up, one process.", "",
             "| batch | ms per image | vs batch 1 |", "|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['ms_per_image']:.1f} | {r['speedup_vs_batch_1']:.2f}× |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
