"""The δ–robustness curve on real photos: the fraction of photos robust per (ε, δ), per judge.

    # robustify the test half at each fixed δ (no escalation) for each ε, judged on the written files
    for e in 1/255 2/255; do for d in 2/255 4/255 8/255 16/255; do
      python benchmarks/real_photos.py --split test --eps $e --delta $d \\
        --variants "curve:inner_loss=margin-mt;inner_steps=2;inner_targets=9;inner_eps_scale=1.5;check_apgd_targets=9" \\
        --judge apgd-full --save runs/rp/curve
    done; done
    python benchmarks/curve.py            # the table (Markdown) and benchmarks/results/curve.png

Reads the rows of ``benchmarks/results/real-photos.jsonl`` whose variant is ``curve`` (δ fixed per run,
so each point is one δ), merged with the judges run afterwards (``--rejudge``).  Per (ε, δ): photos,
robustify's claims, each judge's robust fraction (over the photos it judged), median PSNR and SSIM,
passes and seconds per photo.  A judge that ran on fewer photos than the row has says so (``k/n``).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from real_photos import OUT, judged_rows

JUDGES = (("claimed", "robustify's claim"), ("apgd-full", "APGD-CE + APGD-T (file)"),
          ("standard-full", "standard suite (file)"), ("aa", "reference AutoAttack (file)"))


def points(rows: list[dict], variant: str, split: str) -> dict[tuple[float, float], list[dict]]:
    by: dict[tuple[float, float], list[dict]] = {}
    for r in rows:
        if r["variant"] == variant and r["split"] == split:
            by.setdefault((r["eps"], r["delta"]), []).append(r)
    return dict(sorted(by.items()))


def frac(rs: list[dict], key: str) -> str:
    have = [bool(r[key]) for r in rs if key in r]
    return f"{sum(have)}/{len(have)}" if have else "–"


def table(by: dict) -> str:
    head = "| ε | δ | photos | " + " | ".join(name for _, name in JUDGES) + " | PSNR (median) | SSIM (median) | passes | s / photo |"
    lines = [head, "|" + "---|" * (len(JUDGES) + 7)]
    for (eps, delta), rs in by.items():
        lines.append(f"| {eps * 255:.0f}/255 | {delta * 255:.0f}/255 | {len(rs)} | " + " | ".join(frac(rs, k) for k, _ in JUDGES)
                     + f" | {statistics.median(r['psnr'] for r in rs):.1f} | {statistics.median(r['ssim'] for r in rs):.3f}"
                     f" | {statistics.mean(r['passes'] for r in rs):.0f} | {statistics.mean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


def plot(by: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for eps in sorted({e for e, _ in by}):
        for (key, name), style in zip(JUDGES, ("o--", "s-", "^-", "D-")):
            xs, ys = [], []
            for (e, d), rs in by.items():
                have = [bool(r[key]) for r in rs if key in r]
                if e == eps and have:
                    xs.append(d * 255)
                    ys.append(sum(have) / len(have))
            if xs:
                ax.plot(xs, ys, style, label=f"ε = {eps * 255:.0f}/255: {name}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("δ (× 1/255)")
    ax.set_ylabel("fraction of photos robust")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Real photos vs EfficientNet-Lite0: robust fraction by δ")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=Path, default=Path(OUT))
    ap.add_argument("--variant", default="curve")
    ap.add_argument("--split", default="test")
    ap.add_argument("--png", type=Path, default=Path(OUT).with_name("curve.png"))
    args = ap.parse_args()
    by = points(judged_rows(args.rows), args.variant, args.split)
    if not by:
        raise SystemExit(f"no rows of variant {args.variant!r} ({args.split}) in {args.rows}")
    print(table(by))
    plot(by, args.png)
    print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
