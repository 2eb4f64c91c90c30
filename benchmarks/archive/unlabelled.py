"""Adversarial training with unlabelled data, measured (Carmon et al. 2019, "Unlabeled Data Improves
Adversarial Robustness"; Uesato et al. 2019): clean, PGD-20 and the reference AutoAttack on the same
Fashion-MNIST test images for

* ``fmnist-linf-pgdat-d6k`` — PGD-AT on D alone, the first 6,000 training images (10%, labelled);
* ``fmnist-linf-pgdat-rst`` — PGD-AT on D ∪ D̃: the other 52,000 images with their labels thrown away and
  replaced by the predictions of ``fmnist-standard-d6k`` (a standard model trained on D alone);
* ``fmnist-linf-pgdat`` — PGD-AT on all 58,000 labelled images (the upper reference);

all three with the same settings (ℓ∞ ε = 0.1, PGD-5 step 0.03, 6 epochs, early stopping on 2,000
held-out images; commands in weights/TRAIN.sh and each card).

    python benchmarks/archive/unlabelled.py                       # 1,000 test images, about 10 min on 1 core
    python benchmarks/archive/unlabelled.py --extra /tmp/rst/d6k-30ep.safetensors   # more rows, same images

Writes benchmarks/results/unlabelled.{json,md}.  The AutoAttack column is PyPI ``pyautoattack``,
``version="standard"`` (APGD-CE, APGD-T, FAB-T, Square), run on the model wrapper in [0, 1] pixels.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from harness import reference_autoattack  # the one reference-AutoAttack wrapper (run from benchmarks/)

from preempt import load_model, threat_model
from preempt.attacks import pgd
from preempt.data import fashion_mnist

HERE = Path(__file__).resolve().parent
MODELS = {"fmnist-linf-pgdat-d6k": "PGD-AT on D alone (6,000 labelled)",
          "fmnist-linf-pgdat-rst": "PGD-AT on D + 52,000 pseudo-labelled",
          "fmnist-linf-pgdat": "PGD-AT on all 58,000 labelled"}


def measure(name: str, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> dict:
    model = load_model(name)
    threat = threat_model("linf", eps)
    t0 = time.perf_counter()
    with torch.inference_mode():
        clean = (model.predict(x) == y).float().mean().item()
    gen = torch.Generator().manual_seed(seed)
    p = torch.cat([pgd(model, x[i:i + 500], y[i:i + 500], threat=threat, steps=20, generator=gen).robust
                   for i in range(0, len(x), 500)])
    t_pgd = time.perf_counter() - t0
    t0 = time.perf_counter()
    robust, _ = reference_autoattack(model, x, y, eps, seed=seed, batch_size=500, verbose=False)
    t_aa = time.perf_counter() - t0
    robust_aa = robust.float().mean().item()
    card = model.card
    tr = card.get("training") or {}
    labeller = (card.get("pseudo_labels") or {}).get("labeller")
    teacher_s = 0.0
    if labeller:
        teacher_s = float(((load_model(labeller).card.get("training") or {}).get("wall_time_s")) or 0.0)
    return {"model": name, "label": MODELS.get(name) or _label(card), "clean": clean, "pgd20": p.float().mean().item(),
            "autoattack": robust_aa, "seconds_pgd": round(t_pgd, 1), "seconds_aa": round(t_aa, 1),
            "train_s": tr.get("wall_time_s"), "labeller_train_s": teacher_s or None,
            "command": tr.get("command"), "pseudo_labels": card.get("pseudo_labels"),
            "epochs": tr.get("epochs"), "best_epoch": tr.get("best_epoch"), "sha256": card.get("sha256")}


def _label(card: dict) -> str:
    """A row label from a card's training config (for --extra models)."""
    tr = card.get("training") or {}
    cfg = tr.get("config") or {}
    what = {"pgd-at": "PGD-AT"}.get(str(cfg.get("method")), str(cfg.get("method")))
    if card.get("pseudo_labels"):
        on = f"D + {card['pseudo_labels']['unlabelled']:,} pseudo-labelled"
    elif cfg.get("limit"):
        on = f"D alone ({cfg['limit']:,} labelled)"
    else:
        on = "all labelled"
    return f"{what} on {on}, {tr.get('epochs')} epochs"


def render(doc: dict) -> str:
    md = ["# Adversarial training with unlabelled data (pseudo-labels)", "",
          f"`{doc['command']}` — the first {doc['n']} Fashion-MNIST test images, true labels, ℓ∞ ε = {doc['eps']:g}, "
          f"{doc['machine']}. Accuracy in %. AutoAttack: the reference code (PyPI `pyautoattack`, "
          "`version=\"standard\"`).", "",
          "| Training | Model | Clean | PGD-20 | AutoAttack | Training time | AA seconds |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        t = r["train_s"] or 0.0
        extra = f" + {r['labeller_train_s']:.0f} s labeller" if r.get("labeller_train_s") else ""
        md.append(f"| {r['label']} | `{r['model']}` | {100 * r['clean']:.1f} | {100 * r['pgd20']:.1f} | "
                  f"{100 * r['autoattack']:.1f} | {t:.0f} s{extra} | {r['seconds_aa']:.0f} |")
    by = {r["model"]: r for r in doc["rows"]}
    d, u, full = (by.get(k) for k in MODELS)
    md.append("")
    if d and u:
        gain = 100 * (u["autoattack"] - d["autoattack"])
        verdict = "beats" if gain > 0 else "does not beat"
        md.append(f"- Pseudo-labelled data {verdict} PGD-AT on D alone under AutoAttack: "
                  f"{100 * u['autoattack']:.1f}% vs {100 * d['autoattack']:.1f}% ({gain:+.1f} points; clean "
                  f"{100 * (u['clean'] - d['clean']):+.1f} points).")
        pl = u.get("pseudo_labels") or {}
        if pl:
            md.append(f"- The labeller (`{pl['labeller']}`, a standard model trained on D alone) labelled the "
                      f"{pl['unlabelled']:,} images of D̃ with {100 * pl['accuracy']:.1f}% accuracy (measured against "
                      "their thrown-away labels, which training never saw).")
    if u and full:
        md.append(f"- Against PGD-AT on all labels: {100 * (u['autoattack'] - full['autoattack']):+.1f} points under "
                  f"AutoAttack, {100 * (u['clean'] - full['clean']):+.1f} clean.")
    md += ["", "Commands (from each card):", ""] + [f"- `{r['model']}`: `{r['command']}`" for r in doc["rows"]]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", nargs="*", default=[], help="more models (names or files), measured alike")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "unlabelled")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        sys.exit("pyautoattack is not installed: pip install -e '.[crosscheck]'")
    x, y = fashion_mnist("test")
    x, y = x[:a.n], y[:a.n]
    doc = {"n": a.n, "eps": a.eps, "seed": a.seed, "command": "python benchmarks/archive/unlabelled.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", "rows": []}
    for name in list(MODELS) + a.extra:
        row = measure(name, x, y, a.eps, a.seed)
        doc["rows"].append(row)
        print(f"{row['label']}: clean {100 * row['clean']:.1f}  PGD-20 {100 * row['pgd20']:.1f}  "
              f"AA {100 * row['autoattack']:.1f}  ({row['seconds_aa']:.0f} s)", flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
        a.out.with_suffix(".md").write_text(render(doc))
    print(f"wrote {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
