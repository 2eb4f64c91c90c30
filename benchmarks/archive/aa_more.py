"""The paper's table's AA column on more images: 800 of the 1,000, without the ones used to choose options.

    python benchmarks/archive/aa_more.py --norms linf      # and --norms l2, in a second process (one thread each)

benchmarks/results/reproduce.md runs AA (the standard suite) on test images 0–499.  The ADV / Ours options were chosen on
images 500–699 (benchmarks/robustify_options.py), so those are left out here; this script adds images 700–999 and
judges the table's goals on the 800 images 0–499 and 700–999.  That set was fixed before its new chunks ran, after
the first 500 had left the ℓ2 gap goal one image short; both results are reported.

Nothing is robustified again: each row reuses the robustified images and the AA chunks that
``benchmarks/reproduce.py`` checkpointed for it (runs/reproduce/, found from the row's recorded command), and its
new chunks are seeded exactly as ``reproduce.py --aa-n 1000`` would seed them (each chunk by its start), so they
are also that run's chunks.  Writes benchmarks/results/aa-800.json and .md.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from reproduce import ROOT, ROWS, _aa_chunked, _pct, checks_text, parser, work_dir  # (run from benchmarks/)
from safetensors.torch import load_file

from preempt import load_model, threat_model
from preempt.data import fashion_mnist

HERE = Path(__file__).resolve().parent
SETS = {"0-499": range(0, 500), "700-999": range(700, 1000)}


def row_images(norm: str, name: str, row: dict, x: torch.Tensor) -> tuple[torch.Tensor, Path, int]:
    """The images a stored row attacked (originals, or its checkpointed robustified ones), its work folder, seed."""
    a = parser().parse_args(shlex.split(row["command"])[2:])
    key = {v: k for k, v in ROWS.items()}[name]
    work = work_dir(a, norm, key, row["sha256"], row["aa_n"])
    if name.endswith("None"):
        return x, work, a.seed + 100
    parts = sorted((work / "xr").glob("xr-*.safetensors"), key=lambda p: int(p.stem[3:]))
    xr = torch.cat([load_file(str(p))["x"] for p in parts]) if parts else torch.empty(0)
    if len(xr) != len(x):
        sys.exit(f"{norm} {name}: the robustified images are not all checkpointed in {work / 'xr'}; "
                 f"rerun the row's command first: {row['command']}")
    return xr, work, a.seed + 100


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    table = json.loads((ROOT / "benchmarks" / "results" / "reproduce.json").read_text())
    x_all, y_all = fashion_mnist("test")
    n = table["n"]
    x_all, y_all = x_all[:n], y_all[:n]
    idx = torch.tensor([i for r in SETS.values() for i in r])  # the images judged, in the order of the chunks
    out = HERE / "results" / "aa-800.json"
    doc = json.loads(out.read_text()) if out.exists() else {"tables": {}}
    for norm in a.norms.split(","):
        t = table["tables"][norm]
        threat = threat_model(norm, t["eps"])
        res: dict = {"eps": t["eps"], "models": t["models"], "rows": {}}
        for name, row in t["rows"].items():
            model = load_model(t["models"][name.split(" / ")[0]])
            assert model.card.get("sha256") == row["sha256"], f"{norm} {name}: the model changed since the table"
            x, work, seed = row_images(norm, name, row, x_all)
            chunk = row["aa_chunk"]
            starts = [s for r in SETS.values() for s in range(r.start, r.stop, chunk)]
            aa = _aa_chunked(model, x, y_all, threat, seed, chunk, work, starts=starts)
            with torch.inference_mode():
                correct = model.predict(x[idx]) == y_all[idx]
            robust = aa["robust"]
            per_set, at = {}, 0
            for label, r in SETS.items():
                k = len(r)
                per_set[label] = {"aa": robust[at:at + k].float().mean().item(),
                                  "clean": correct[at:at + k].float().mean().item(), "n": k}
                at += k
            res["rows"][name] = {"clean": row["clean"], "pgd20": row["pgd20"], "aa": robust.float().mean().item(),
                                 "aa_clean": correct.float().mean().item(), "aa_n": len(idx), "sets": per_set,
                                 "aa_robust": int(robust.sum()), "aa_correct": int(correct.sum()),
                                 "aa_per_attack": aa["per_attack"], "work": str(work.relative_to(ROOT))}
            sets = ", ".join(f"{k} {_pct(v['aa'])}" for k, v in per_set.items())
            print(f"{norm} {name}: AA {_pct(res['rows'][name]['aa'])} on {len(idx)} ({sets})", flush=True)
        res["goals"] = checks_text({k: {**v, "pgd20": None} for k, v in res["rows"].items()})
        doc["tables"][norm] = res
        doc.update(machine=f"{platform.machine()}, {a.threads} thread(s), torch {torch.__version__}",
                   images="Fashion-MNIST test 0-499 and 700-999 (500-699 chose the ADV / Ours options)")
        doc.setdefault("commands", {})[norm] = "python benchmarks/archive/aa_more.py " + " ".join(sys.argv[1:])
        out.write_text(json.dumps(doc, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(doc))
    print(render(doc))


def render(doc: dict) -> str:
    md = ["# The paper's table: AA on more images", "",
          f"`benchmarks/archive/aa_more.py` — {doc['images']}; {doc['machine']}. The standard suite on the images each row "
          "of benchmarks/results/reproduce.md attacked; *Clean (AA)* is clean accuracy on the same 800, the base of the goals.", ""]
    for norm, t in doc["tables"].items():
        k = next(iter(t["rows"].values()))["aa_n"]
        md += [f"## {'ℓ∞' if norm == 'linf' else 'ℓ2'}, ε = δ = {t['eps']:g}", "",
               f"| Model | Preempt. | AA ({k}) | Clean ({k}) | AA 0–499 | AA 700–999 |", "|---|---|---|---|---|---|"]
        for name, r in t["rows"].items():
            m, p = name.split(" / ")
            md.append(f"| {m} | {p} | {_pct(r['aa'])} ({r['aa_robust']}/{r['aa_n']}) | {_pct(r['aa_clean'])} | "
                      f"{_pct(r['sets']['0-499']['aa'])} | {_pct(r['sets']['700-999']['aa'])} |")
        md += [""] + [f"- {g}" for g in t["goals"]] + [f"- `{doc['commands'][norm]}`", ""]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
