"""What one classifier pass costs as the batch grows: the basis of APGD-T's targets-at-once batching.

    python benchmarks/pass_cost.py          # → benchmarks/results/pass-cost.{json,md}
    python benchmarks/pass_cost.py --compare fold      # batch norms folded or not → pass-cost-fold.{json,md}
    python benchmarks/pass_cost.py --compare bfloat16  # float32 or bfloat16 autocast → pass-cost-bfloat16.{json,md}

A pass is one forward and one backward to the input (what every attack step costs) of
``efficientnet-lite0`` at its 224×224 input, in the model wrapper (preprocessing included), batch
1, 2, 4, 9, 18 and 32, each timed as the median of ``--repeat`` runs after a warm-up, all in one
process, side by side; milliseconds per image, and the ratio to batch 1.  Run it alone: anything
sharing the cores inflates the milliseconds.  ``--compare`` times the network as loaded (batch norms folded
into the convolutions, :meth:`EfficientNetLite.fold_batchnorm`, float32) against the same weights unfolded
(``fold``) or against itself under bfloat16 autocast (``bfloat16``, robustify's ``loop_precision``),
interleaved repeat by repeat so that both see the same machine.
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
from preempt.models.architectures import build
from preempt.models.assemble import classifier
from preempt.models.files import read_state
from preempt.models.registry import bundled

HERE = Path(__file__).resolve().parent


def per_image_ms(model, batch: int, repeat: int, size: int, bf16: bool = False) -> float:
    x = torch.rand(batch, 3, size, size)
    y = torch.zeros(batch, dtype=torch.long)

    def one() -> None:
        xa = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(xa).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        torch.autograd.grad(loss, xa)

    one()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / batch


def unfolded(name: str):
    """The bundled model ``name`` with its batch norms as trained (what load_model folds)."""
    info = bundled()[name]
    net = build(info.card["arch"], **info.card.get("arch_kwargs", {}))
    net.load_state_dict(read_state(info.path))
    return classifier(net, dict(info.card), name)


def compare_rows(name: str, what: str, batches: list[int], repeat: int) -> list[dict]:
    """ms per image of the model as loaded (a) and of ``what`` (b: ``fold`` the unfolded weights, ``bfloat16``
    autocast), interleaved (median of ``repeat`` rounds of one run each)."""
    a_model = load_model(name)
    b_model, bf16 = (unfolded(name), False) if what == "fold" else (a_model, True)
    size = a_model.pre.input_size[0]
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        a_logits = a_model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            gap = float((a_logits - b_model(x).float()).abs().max())
    rows = []
    for b in batches:
        a, p = [], []
        for _ in range(repeat):
            a.append(per_image_ms(a_model.at_input_size(), b, 1, size))
            p.append(per_image_ms(b_model.at_input_size(), b, 1, size, bf16=bf16))
        fa, pb = statistics.median(a), statistics.median(p)
        rows.append({"batch": b, "as_loaded_ms": round(fa, 2), f"{what}_ms": round(pb, 2),
                     "ratio": round(pb / fa, 2) if what == "fold" else round(fa / pb, 2), "max_logit_gap": gap})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--batches", default="1,2,4,9,18,32")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", choices=("fold", "bfloat16"), help="the model as loaded against unfolded batch "
                    "norms or against bfloat16 autocast, side by side")
    args = ap.parse_args()
    if args.compare:
        compare_main(args)
        return
    args.out = args.out or HERE / "results" / "pass-cost.json"
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


def compare_main(args: argparse.Namespace) -> None:
    what = args.compare
    out_path = args.out or HERE / "results" / f"pass-cost-{what}.json"
    rows = compare_rows(args.model, what, [int(b) for b in args.batches.split(",")], args.repeat)
    out = {"command": "python " + " ".join(sys.argv), "model": args.model,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    title = ("batch norms folded into the convolutions (as loaded), or not" if what == "fold"
             else "float32 (as loaded, folded), or under bfloat16 autocast")
    other = "unfolded" if what == "fold" else "bfloat16"
    lines = [f"# {args.model}: {title} (one forward + backward per image)", "",
             f"`{out['command']}` on {out['machine']}; each of {args.repeat} rounds times one pass of each, "
             f"interleaved; medians. Largest logit difference between the two on random images: {rows[0]['max_logit_gap']:.1e}.",
             "", f"| batch | as loaded ms / image | {other} ms / image | as loaded is faster by |" if what == "fold" else
             "| batch | float32 ms / image | bfloat16 ms / image | bfloat16 is faster by |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['as_loaded_ms']:.1f} | {r[what + '_ms']:.1f} | {r['ratio']:.2f}× |" for r in rows]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
