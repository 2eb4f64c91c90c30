"""What one classifier pass costs as the batch grows: the basis of APGD-T's targets-at-once batching.

    python benchmarks/pass_cost.py          # → benchmarks/results/pass-cost.{json,md}
    python benchmarks/pass_cost.py --compare fold      # batch norms folded or not → pass-cost-fold.{json,md}
    python benchmarks/pass_cost.py --compare bfloat16  # float32 or bfloat16 autocast → pass-cost-bfloat16.{json,md}
    python benchmarks/pass_cost.py --compare frozen --bf16         # weights requires_grad or not → pass-cost-frozen.{json,md}
    python benchmarks/pass_cost.py --compare channels-last --bf16  # NCHW or channels-last → pass-cost-channels-last.{json,md}
    python benchmarks/pass_cost.py --compare padding --bf16        # "same" padding by the conv or by F.pad → pass-cost-padding.{json,md}
    PREEMPT_FORCE_FLOAT32=1 python benchmarks/pass_cost.py --compare compile   # eager or torch.compile (inductor) → pass-cost-compile.{json,md}

A pass is one forward and one backward to the input (what every attack step costs) of
``efficientnet-lite0`` at its 224×224 input, in the model wrapper (preprocessing included), batch
1, 2, 4, 9, 18 and 32, each timed as the median of ``--repeat`` runs after a warm-up, all in one
process, side by side; milliseconds per image, and the ratio to batch 1.  Run it alone: anything
sharing the cores inflates the milliseconds.  ``--compare`` times the network as loaded (batch norms folded
into the convolutions, :meth:`EfficientNetLite.fold_batchnorm`, float32) against the same weights unfolded
(``fold``) or against itself under bfloat16 autocast (``bfloat16``, robustify's ``loop_precision``),
interleaved repeat by repeat so that both see the same machine.  Three more comparisons (``--bf16``: both under
bfloat16 autocast, as robustify's loop runs): ``frozen``, the network's weights with ``requires_grad`` off (as loaded,
the folded convolutions' weights keep it on; attacks differentiate to the input only); ``channels-last``, the
network and its input in channels-last memory format; ``padding``, TensorFlow "same" padding as the convolution's own
symmetric padding plus a one-pixel pad for an odd remainder (as loaded) against a full copy of the input through
``F.pad`` before every convolution (how it was done until 2026-12-05).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from preempt import load_model
from preempt.models.architectures import build
from preempt.models.assemble import classifier
from preempt.models.efficientnet import SameConv2d
from preempt.models.files import read_state
from preempt.models.registry import bundled

HERE = Path(__file__).resolve().parent


def per_image_ms(model, batch: int, repeat: int, size: int, bf16: bool = False, channels_last: bool = False) -> float:
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
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


def pad_all_forward(self, x: torch.Tensor) -> torch.Tensor:
    """SameConv2d.forward as it was: the whole "same" padding by F.pad (a copy of the input), then an unpadded conv."""
    ph, pw = self.same_padding(*x.shape[-2:])
    if ph or pw:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def variant(name: str, what: str, a_model):
    """The model ``what`` compares with the one as loaded: (model, bfloat16 on its side only)."""
    if what == "fold":
        return unfolded(name), False
    if what == "bfloat16":
        return a_model, True
    b_model = copy.deepcopy(a_model)
    if what == "frozen":
        b_model.requires_grad_(False)
    elif what == "padding":
        for m in b_model.modules():
            if isinstance(m, SameConv2d):
                m.forward = types.MethodType(pad_all_forward, m)
    elif what == "compile":  # inductor, one graph per batch size (compiled in each size's warm-up, not timed)
        b_model.net = torch.compile(b_model.net, dynamic=False)
    else:  # channels-last
        b_model.net.to(memory_format=torch.channels_last)
    return b_model, False


def compare_rows(name: str, what: str, batches: list[int], repeat: int, bf16_both: bool = False) -> list[dict]:
    """ms per image of the model as loaded (a) and of ``what`` (b: ``fold`` the unfolded weights, ``bfloat16``
    autocast, ``frozen`` weights, ``channels-last``, ``padding`` by F.pad), interleaved (median of ``repeat`` rounds of one run each);
    ``bf16_both``: both sides under bfloat16 autocast."""
    a_model = load_model(name)
    b_model, bf16 = variant(name, what, a_model)
    cl = what == "channels-last"
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
            a.append(per_image_ms(a_model.at_input_size(), b, 1, size, bf16=bf16_both))
            p.append(per_image_ms(b_model.at_input_size(), b, 1, size, bf16=bf16 or bf16_both, channels_last=cl))
        fa, pb = statistics.median(a), statistics.median(p)
        rows.append({"batch": b, "as_loaded_ms": round(fa, 2), f"{what}_ms": round(pb, 2),
                     "ratio": round(pb / fa, 2) if what in ("fold", "padding") else round(fa / pb, 2), "max_logit_gap": gap})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--batches", default="1,2,4,9,18,32")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", choices=("fold", "bfloat16", "frozen", "channels-last", "padding", "compile"),
                    help="the model as loaded against unfolded batch norms, bfloat16 autocast, frozen weights, "
                    "channels-last or padding by F.pad, side by side")
    ap.add_argument("--bf16", action="store_true", help="with --compare frozen, channels-last or padding: both under bfloat16")
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


TITLES = {"fold": ("batch norms folded into the convolutions (as loaded), or not", "unfolded", "as loaded is faster by"),
          "bfloat16": ("float32 (as loaded, folded), or under bfloat16 autocast", "bfloat16", "bfloat16 is faster by"),
          "frozen": ("weights as loaded, or with requires_grad off", "frozen", "frozen is faster by"),
          "channels-last": ("NCHW (as loaded), or channels-last memory format", "channels-last", "channels-last is faster by"),
          "padding": ('"same" padding by the convolution (as loaded), or by F.pad', "F.pad", "as loaded is faster by"),
          "compile": ("eager (as loaded), or torch.compile (inductor)", "compiled", "compiled is faster by")}


def compare_main(args: argparse.Namespace) -> None:
    what = args.compare
    out_path = args.out or HERE / "results" / f"pass-cost-{what}.json"
    rows = compare_rows(args.model, what, [int(b) for b in args.batches.split(",")], args.repeat, bf16_both=args.bf16)
    out = {"command": "python " + " ".join(sys.argv), "model": args.model,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    title, other, faster = TITLES[what]
    first = "float32" if what == "bfloat16" else "as loaded"
    lines = [f"# {args.model}: {title} (one forward + backward per image{', both under bfloat16 autocast' if args.bf16 else ''})", "",
             f"`{out['command']}` on {out['machine']}; each of {args.repeat} rounds times one pass of each, "
             f"interleaved; medians. Largest logit difference between the two on random images: {rows[0]['max_logit_gap']:.1e}.",
             "", f"| batch | {first} ms / image | {other} ms / image | {faster} |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['as_loaded_ms']:.1f} | {r[what + '_ms']:.1f} | {r['ratio']:.2f}× |" for r in rows]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
