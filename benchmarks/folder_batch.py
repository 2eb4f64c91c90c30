"""How many photos robustify should batch together on a CPU: photos per second at batch 1, 2, 4, 8 and 16.

    PREEMPT_FORCE_FLOAT32=1 python benchmarks/folder_batch.py --folder corpus/test-scenes --photos 16
    python benchmarks/folder_batch.py --folder corpus/test-scenes --photos 16        # bfloat16 attackers where native

Every photo of a folder is 224 × 224 at the model's input whatever its file size, so a folder can be one batch.
But the card's loop runs 9 persistent attackers per photo, so a batch of b photos is a pass over 9·b images,
and past a point a larger batch costs more per image on a CPU (caches). This times the card's loop itself at a
fixed length (``--steps`` outer steps, no early stop, no check, no final verdict: the same work per photo at
every batch size) over ``--photos`` photos in chunks of each batch size, the sizes interleaved round by round
(``--rounds``), in one process; photos per second and the ratio to batch 1. Run it alone on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from harness import RESULTS, robustify_batched, stamp, write

from preempt import load_model
from preempt.algorithms.robustify import RobustifyConfig, precision_used
from preempt.pipeline.photos import load_photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("corpus/test-scenes"))
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=6, help="outer steps per photo (fixed: no early stop)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "folder-batch")
    args = ap.parse_args()
    model = load_model("efficientnet-lite0")
    files = sorted(args.folder.glob("*.png"))
    xs = [load_photo(f).tensor() for f in files]
    xs = [x for x in xs if x.shape == xs[0].shape][: args.photos]  # one size: a batch is a stack
    if len(xs) < max(map(int, args.batches.split(","))):
        sys.exit(f"{args.folder}: only {len(xs)} photos of one size")
    x = torch.stack(xs)
    with torch.inference_mode():
        y = model.predict(x)
    cfg = RobustifyConfig.for_model(model, eps=1 / 255, delta=8 / 255, steps=args.steps, early_stop=False,
                                    max_delta=None, give_up=0, final=None, least_change=False)
    batches = [int(b) for b in args.batches.split(",")]
    times: dict[int, list[float]] = {b: [] for b in batches}
    passes: dict[int, int] = {}
    for r in range(args.rounds):
        for b in batches:
            run = robustify_batched(model, x, y, batch=b, config=cfg)
            times[b].append(run.seconds)
            passes[b] = n_pass = run.passes
            print(f"round {r + 1} batch {b}: {len(x) / times[b][-1]:.3f} photos/s ({n_pass} passes)", flush=True)
    rows = []
    for b in batches:
        s = statistics.median(times[b])
        rows.append({"batch": b, "seconds": round(s, 2), "photos_per_s": round(len(x) / s, 4),
                     "ms_per_pass": round(1000 * s / passes[b], 2), "passes": passes[b]})
    base = rows[0]["photos_per_s"]
    for row in rows:
        row["vs_batch_1"] = round(row["photos_per_s"] / base, 2)
    st = stamp()
    prec = precision_used(cfg, "cpu")
    md = [f"# robustify's loop, photos per second by batch size ({len(x)} photos of {args.folder.name}, "
          f"{args.steps} outer steps each, attackers in {prec})", "",
          f"`{st['command']}`; {st['machine']}, CPU flags {', '.join(st['cpu_flags'])}; git {st['git']}; "
          f"median of {args.rounds} interleaved rounds.", "",
          "| photos per batch | s for all | photos / s | ms per pass | vs batch 1 |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['batch']} | {r['seconds']:.1f} | {r['photos_per_s']:.3f} | {r['ms_per_pass']:.1f} | "
           f"{r['vs_batch_1']:.2f}× |" for r in rows]
    write(f"{args.out}-{prec}", {"rows": rows, "precision": prec, "photos": len(x), "steps": args.steps,
                                 "stamp": st}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
