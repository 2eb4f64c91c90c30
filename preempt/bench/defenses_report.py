"""The defenses table's document as Markdown and a plot (:func:`render`, :func:`plot`), written atomically (:func:`write`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# the rows, in the table's order, and what each is called
ROWS: dict[str, str] = {
    "standard": "Standard model", "magnet": "MagNet (reconstruction detector)", "magnet-jsd": "MagNet (JSD detector)",
    "magnet-both": "MagNet (both detectors)", "defense-gan": "Defense-GAN", "pgd-at": "PGD-AT",
    "fast-at": "Fast-AT", "pgd-at-d": "PGD-AT on 10% labelled", "rst": "PGD-AT, 10% labelled + 90% pseudo-labelled",
    "smoothing": "Randomized smoothing", "adv-ours": "ADV / Ours", "ours-ours": "Ours / Ours",
    "rst-ours": "Pseudo-labelled AT / Ours",
}
# the rows with no ℓ2 meaning, and why
NO_L2 = {"fast-at": "Fast-AT is an ℓ∞ method (one FGSM sign step of 1.25ε from a random start); no ℓ2 model is "
                    "bundled",
         "pgd-at-d": "its model is trained against ℓ∞ only (no ℓ2 pseudo-label run was made)",
         "rst": "its model is trained against ℓ∞ only (no ℓ2 pseudo-label run was made)",
         "rst-ours": "its model is trained against ℓ∞ only (no ℓ2 pseudo-label run was made)"}


def write(doc: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(doc, indent=2) + "\n"), (".md", render(doc))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out.with_suffix(suffix))
    plot(doc, out.with_suffix(".png"))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _cost(v: float | None, unit: str = "ms") -> str:
    if v is None:
        return "–"
    if unit == "s":
        return f"{v / 60:.0f} min" if v >= 600 else f"{v:.0f} s"
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def render(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    norm = "ℓ2" if cfg.get("norm") == "l2" else "ℓ∞"
    md = ["# Defenses side by side on Fashion-MNIST" + (" (ℓ2)" if norm == "ℓ2" else ""), "",
          f"`preempt bench defenses{' --norm l2' if norm == 'ℓ2' else ''}` — the first {cfg['n']} test images, true "
          f"labels, {norm} ε = {cfg['eps']:g}, seed "
          f"{cfg['seed']}, {doc.get('machine', '')}. Accuracy in %. *Non-adaptive*: the attack the defense's paper "
          "reports (PGD-20 crafted without knowing the defense). *Adaptive*: the worst case per image over every "
          "attack of the row, the non-adaptive one included. Costs: training wall time (the defense's networks and "
          "its classifier), inference and robustification per image, measured in this run on this machine.", "",
          "| Defense | Model | Clean | Non-adaptive | Adaptive | Certified | Training | Inference / img | "
          "Robustify / img |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = doc["rows"]
    for key in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        rob = "–" if r["robustify_ms"] is None else f"{_cost(r['robustify_ms'])} ({r['robustify_passes']:.0f} passes)"
        md.append(f"| {r['name']} | `{r['model']}` | {_pct(r['clean'])} | {_pct(r['non_adaptive'])} | "
                  f"{_pct(r['adaptive']) if r['adaptive'] is not None else 'not evaluated'} | {_pct(r['certified'])} | "
                  f"{_cost(r['train_s'], 's')} | {_cost(r['inference_ms'])} | {rob} |")
    if norm == "ℓ2":
        md += ["", "Rows without an ℓ2 version: " + "; ".join(f"**{ROWS[k]}** — {why}" for k, why in NO_L2.items()) + "."]
    md += _render_distortion(rows)
    md += ["", "## What each row ran", ""]
    for key in ROWS:
        if key not in rows:
            continue
        r = rows[key]
        after = ", ".join(f"{k} {_pct(v)}" for k, v in r["per_attack"].items())
        line = f"- **{r['name']}**: non-adaptive = {r['non_adaptive_attack']}; "
        line += (f"adaptive = {r['adaptive_attack']}." if r["adaptive"] is not None
                 else "**evaluated only with a non-adaptive attack**.")
        md.append(line + f" Accuracy after each attack: {after}. ({r['seconds']:.0f} s)")
        md += [f"  - {n}" for n in r.get("notes", [])]
    md.append("")
    return "\n".join(md) + "\n"


def ball_name(threat: str) -> str:
    """``linf(eps=0.1)`` → ``ℓ∞ ε = 0.1`` (a threat model as stored in the JSON, for the table)."""
    import re

    m = re.fullmatch(r"(linf|l2)\(eps=([0-9.e-]+)\)", threat)
    return f"{'ℓ∞' if m.group(1) == 'linf' else 'ℓ2'} ε = {float(m.group(2)):g}" if m else threat


def _render_distortion(rows: dict[str, Any]) -> list[str]:
    """MagNet rows: the unbounded CW-ℓ2 attack beside the detector-aware PGD-50."""
    have = [k for k in ROWS if k in rows and rows[k].get("extra", {}).get("cw-l2")]
    if not have:
        return []
    ex0 = rows[have[0]]["extra"]
    linf_r, l2_r = list(ex0["cw-l2"]["acc_linf"]), list(ex0["cw-l2"]["acc_l2"])
    md = ["", "## MagNet under the Carlini–Wagner attack", "",
          f"On the first {ex0['n']} images, of those MagNet accepts and classifies correctly: the share each attack "
          "breaks (misclassified and accepted by the detectors, judged by MagNet's own prediction), the median "
          f"distortion of its successes, and the accuracy left (of all {ex0['n']}) at ℓ∞ and ℓ2 radii: the points "
          "each attack found, counted where they lie within the radius. CW-ℓ2 is unbounded (it minimises the ℓ2 "
          "distortion); PGD-50 is bounded by the table's ε.", "",
          "| Row | Attack | Broken | Median ℓ2 | Median ℓ∞ | " + " | ".join(f"Acc. ℓ∞ {r}" for r in linf_r) + " | "
          + " | ".join(f"Acc. ℓ2 {r}" for r in l2_r) + " | Seconds |",
          "|---|---|" + "---:|" * (3 + len(linf_r) + len(l2_r) + 1)]
    for k in have:
        pgd_label = f"PGD-50 + detector penalty ({ball_name(rows[k]['extra'].get('pgd_threat', 'ε-ball'))})"
        for name, label in (("cw-l2", "CW-ℓ2 (unbounded)"), ("pgd-50", pgd_label)):
            a = rows[k]["extra"][name]
            med = ["–" if a[m] is None else f"{a[m]:.2f}" for m in ("median_l2", "median_linf")]
            md.append(f"| {rows[k]['name']} | {label} | {_pct(a['success'])} | {med[0]} | {med[1]} | "
                      + " | ".join(_pct(a["acc_linf"][r]) for r in linf_r) + " | "
                      + " | ".join(_pct(a["acc_l2"][r]) for r in l2_r) + f" | {a['seconds']:.0f} |")
    return md


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Clean, non-adaptive and adaptive accuracy against the per-image cost at use (inference +
    robustification) and against the training cost, one panel each."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    rows = [r for k, r in doc["rows"].items() if k in ROWS]
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=110, sharey=True)
    costs = {"at use: inference + robustification per image (ms)":
             lambda r: r["inference_ms"] + (r["robustify_ms"] or 0.0),
             "training: the defense's networks and its classifier (min)":
             lambda r: max((r["train_s"] or 0.0) / 60, 0.1)}
    for ax, (label, cost_of) in zip(axes, costs.items()):
        label_y: list[tuple[float, float]] = []  # (cost, y) of the labels placed so far
        for r in sorted(rows, key=lambda r: (r["adaptive"] if r["adaptive"] is not None else r["non_adaptive"])):
            cost = cost_of(r)
            adv = r["adaptive"] if r["adaptive"] is not None else r["non_adaptive"]
            ax.plot([cost, cost], [100 * adv, 100 * r["clean"]], color="0.8", zorder=1)
            ax.scatter([cost], [100 * r["clean"]], marker="o", color="tab:blue", zorder=2)
            ax.scatter([cost], [100 * r["non_adaptive"]], marker="^", color="tab:orange", zorder=2)
            ax.scatter([cost], [100 * adv], marker="x", color="tab:red", zorder=3)
            # labels of rows with close costs are pushed up until they are 6 points apart
            y = 100 * adv
            for c, ly in sorted(label_y, key=lambda t: t[1]):
                if 0.5 < cost / c < 2 and abs(y - ly) < 6:
                    y = ly + 6
            label_y.append((cost, y))
            ax.annotate(r["name"], (cost, 100 * adv), xytext=(cost * 1.25, y - 1.5), fontsize=8,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"cost {label}, log scale")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(-5, 100)
    axes[0].legend(handles=[Line2D([], [], marker="o", ls="", color="tab:blue", label="clean"),
                            Line2D([], [], marker="^", ls="", color="tab:orange", label="non-adaptive attack"),
                            Line2D([], [], marker="x", ls="", color="tab:red", label="adaptive attack")],
                   loc="lower right", fontsize=8)
    norm = "ℓ2" if doc["config"].get("norm") == "l2" else "ℓ∞"
    fig.suptitle(f"Fashion-MNIST, {norm} ε = {doc['config']['eps']:g}, {doc['config']['n']} test images "
                 "(labels at the adaptive-attack point)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True
