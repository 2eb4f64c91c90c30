"""The δ–robustness curve on real photos: the fraction of photos robust per (ε, δ), per judge.

Two ways to measure it; the table says which one its rows are.

*Escalation* (``--escalation``, what was run): one robustify run per ε, starting at δ = 2/255 and
escalating 4, 8, 16/255 for the photos not yet robust (robustify's ``max_delta``).  Each stage starts
again from the original with its own seed, so a photo robust at ``δ_used ≤ d`` gets the very same
pixels from ``--delta 2/255 --max-delta d``: the point at ``d`` is what a user who allows ``d`` gets.

    MT="inner_loss=margin-mt;inner_steps=2;inner_targets=9;inner_eps_scale=1.5;check_apgd_targets=9;max_delta=16/255"
    python benchmarks/real_photos.py --split test --eps 1/255 --delta 2/255 --variants "curve-esc:$MT" \\
      --judge apgd-full --save runs/rp/curve
    python benchmarks/real_photos.py --split test --eps 2/255 --delta 2/255 --variants "curve-esc2:$MT" \\
      --names foolbox-imagenet_07_609,foolbox-imagenet_12_741,matplotlib-grace_hopper,skimage-chelsea,skimage-coffee,sklearn-china \\
      --judge apgd-full --save runs/rp/curve
    python benchmarks/curve.py --escalation --variant curve-esc,curve-esc2   # the table and benchmarks/results/curve.png

(ε = 2/255 on 6 of the 18 test photos, for time.)  The reference AutoAttack runs afterwards on saved outputs:
``real_photos.py --rejudge --judge aa --save runs/rp/curve --variants-only curve-esc --names …``.

*Fixed δ* (the default mode): one run per (ε, δ) without escalation, each row one point.

    for e in 1/255 2/255; do for d in 2/255 4/255 8/255 16/255; do
      python benchmarks/real_photos.py --split test --eps $e --delta $d \\
        --variants "curve:inner_loss=margin-mt;inner_steps=2;inner_targets=9;inner_eps_scale=1.5;check_apgd_targets=9" \\
        --judge apgd-full --save runs/rp/curve
    done; done
    python benchmarks/curve.py

Reads the rows of ``benchmarks/results/real-photos.jsonl`` of ``--variant``, merged with the judges run
afterwards (``--rejudge``).  A photo counts robust at a point when robustify claimed it there and the
judge, run on the written file, did not break it; a photo not claimed there counts as not robust (the
tool names it ``.not-robust``).  A judge that ran on only some of the claimed photos says so: ``k/n``
counts over the photos whose status is known (judged, or not claimed).  Per point also the median PSNR
and SSIM of the photos claimed there, and passes and seconds per photo (for escalation: of the whole
run, every stage included).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from real_photos import OUT, judged_rows

from preempt.budget import parse_budget

JUDGES = (("claimed", "robustify's claim"), ("apgd-full", "APGD-CE + APGD-T (file)"),
          ("standard-full", "standard suite (file)"), ("aa", "reference AutoAttack (file)"))
DELTAS = (2 / 255, 4 / 255, 8 / 255, 16 / 255)


def max_delta(row: dict) -> float:
    """The δ an escalating row's run went up to (``max_delta=…`` in its variant spec; else its start δ)."""
    for item in row.get("config", "").partition(":")[2].split(";"):
        k, _, v = item.partition("=")
        if k == "max_delta" and v != "none":
            return parse_budget(v)
    return row["delta"]


def points(rows: list[dict], variant: str, split: str, escalation: bool = False) -> dict[tuple[float, float], list[dict]]:
    """Rows per (ε, δ) point, each with ``at``: whether the photo was claimed robust at that point."""
    by: dict[tuple[float, float], list[dict]] = {}
    for r in rows:
        if r["variant"] not in variant.split(",") or r["split"] != split:
            continue
        top = max_delta(r) if escalation else r["delta"]
        for d in (DELTAS if escalation else (r["delta"],)):
            if escalation and (d < r["delta"] - 1e-9 or d > top + 1e-9):
                continue  # below the run's start, or above the δ it escalated to: not measured
            at = bool(r["claimed"]) and (not escalation or r["delta_used"] <= d + 1e-9)
            by.setdefault((r["eps"], d), []).append({**r, "at": at})
    return dict(sorted(by.items()))


def counts(rs: list[dict], key: str) -> tuple[int, int] | None:
    """(robust, known) over ``rs`` per judge ``key``; None if the judge ran on none of these photos."""
    if key == "claimed":
        return sum(r["at"] for r in rs), len(rs)
    if not any(key in r for r in rs):
        return None
    judged = [r for r in rs if r["at"] and key in r]
    known = [r for r in rs if not r["at"] or key in r]
    return sum(bool(r[key]) for r in judged), len(known)


def frac(rs: list[dict], key: str) -> str:
    c = counts(rs, key)
    return "–" if c is None else f"{c[0]}/{c[1]}"


def median(rs: list[dict], key: str, digits: int) -> str:
    return f"{statistics.median(r[key] for r in rs):.{digits}f}" if rs else "–"


def table(by: dict) -> str:
    head = ("| ε | δ | photos | " + " | ".join(name for _, name in JUDGES)
            + " | PSNR (median, claimed) | SSIM (median, claimed) | passes / photo (mean) | s / photo (mean) |")
    lines = [head, "|" + "---|" * (len(JUDGES) + 7)]
    for (eps, delta), rs in by.items():
        won = [r for r in rs if r["at"]]
        lines.append(f"| {eps * 255:g}/255 | {delta * 255:.0f}/255 | {len(rs)} | " + " | ".join(frac(rs, k) for k, _ in JUDGES)
                     + f" | {median(won, 'psnr', 1)} | {median(won, 'ssim', 3)}"
                     f" | {statistics.mean(r['passes'] for r in rs):.0f} | {statistics.mean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


def plot(by: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, eps in enumerate(sorted({e for e, _ in by})):
        for (key, name), style in zip(JUDGES, ("o:", "s-", "^--", "D-")):
            xs, ys, whole = [], [], True
            for (e, d), rs in by.items():
                c = counts(rs, key)
                if e == eps and c is not None and c[1]:
                    xs.append(d * 255)
                    ys.append(c[0] / c[1])
                    whole &= c[1] == len(rs)
            if xs and whole:  # a judge run on only some claimed photos is in the table, not the plot
                ax.plot(xs, ys, style, color=f"C{i}", label=f"ε = {eps * 255:g}/255: {name}")
    ax.set_xscale("log", base=2)
    ax.set_xticks([d * 255 for d in DELTAS], [f"{d * 255:.0f}/255" for d in DELTAS])
    ax.set_xlabel("δ (the user's budget)")
    ax.set_ylabel("fraction of test photos robust")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=Path, default=Path(OUT))
    ap.add_argument("--variant", default="curve", help="the rows' variant names (comma-separated: one per ε, say)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--escalation", action="store_true", help="rows of one escalating run per ε (δ from 2/255)")
    ap.add_argument("--png", type=Path, default=Path(OUT).with_name("curve.png"))
    args = ap.parse_args()
    by = points(judged_rows(args.rows), args.variant, args.split, args.escalation)
    if not by:
        raise SystemExit(f"no rows of variant {args.variant!r} ({args.split}) in {args.rows}")
    print(table(by))
    start = min(r["delta"] for rs in by.values() for r in rs)
    how = f"δ escalating from {start * 255:g}/255" if args.escalation else "fixed δ"
    plot(by, args.png, f"Real photos vs EfficientNet-Lite0 ({args.split} half, {how})")
    print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
