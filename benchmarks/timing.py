"""Wall time of `preempt robustify` with its defaults, as a user runs it: a 512-px photo and a 12 MP photo.

    python benchmarks/corpus.py --out corpus/          # the 512-px photo comes from the corpus
    python benchmarks/timing.py                        # → benchmarks/results/timing.{json,md}

Each photo is robustified by the CLI in its own process (``python -m preempt.cli robustify PHOTO -o DIR
--json``, no other flag: the default model and its card's settings), timed from outside with
``/usr/bin/time`` (wall seconds, peak RSS).  The 12 MP photo is scikit-image's chelsea upscaled to
4000×3000 and saved as JPEG q92.  Issue 21's goals: ≤ 30 s for a 512-px photo, ≤ 60 s for 12 MP, on
this project's 2-core CPU.  Run it alone: anything sharing the cores inflates the seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from photos import _timed, chelsea_12mp
from PIL import Image

HERE = Path(__file__).resolve().parent


def photos(corpus: Path, names: list[str], tmp: Path) -> list[tuple[str, Path]]:
    out = [(f"{n} (corpus, {'×'.join(map(str, Image.open(corpus / 'test' / f'{n}.png').size))})", corpus / "test" / f"{n}.png")
           for n in names]
    return out + [("scikit-image chelsea upscaled to 4000×3000 (12 MP), JPEG q92", chelsea_12mp(tmp / "chelsea-12mp.jpg"))]


def settings_of(cfg: dict) -> dict:
    """The robustify settings a timing depends on, from the CLI's JSON config."""
    keys = ("eps", "delta", "max_delta", "give_up", "inner_loss", "check_resolution", "loop_precision", "least_change")
    check = cfg.get("check")
    return {**{k: cfg.get(k) for k in keys}, "check": check.get("name") if isinstance(check, dict) else check}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--names", default="foolbox-imagenet_06_609", help="512-px test photos of the corpus (comma-separated)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "timing.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for what, src in photos(args.corpus, args.names.split(","), tmp):
        r = _timed([sys.executable, "-m", "preempt.cli", "robustify", str(src), "-o", str(tmp / src.stem), "--json"])
        doc = json.loads(r.pop("stdout") or "{}")
        f = (doc.get("files") or [{}])[0]
        m = f.get("metrics") or {}
        r.update(photo=what, status=f.get("status"), delta=m.get("delta"), psnr=m.get("psnr"), passes=m.get("passes"),
                 model=doc.get("model"),
                 settings=settings_of(doc.get("config") or {}))
        rows.append(r)
        print(json.dumps(r), flush=True)
    out = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# `preempt robustify` with its defaults: wall time per photo", "",
             f"`{out['command']}` on {out['machine']}, torch {out['torch']}; each photo in its own process "
             "(model loading included).", "",
             "| photo | status | δ used | PSNR | passes | wall s | peak RSS MB |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        d = f"{r['delta'] * 255:.0f}/255" if isinstance(r.get("delta"), float) else "–"
        ps = f"{r['psnr']:.1f}" if isinstance(r.get("psnr"), float) else "–"
        lines.append(f"| {r['photo']} | {r['status']} | {d} | {ps} | {r.get('passes') or '–'} | {r['seconds']} | {r['peak_rss_mb']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
