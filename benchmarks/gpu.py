"""GPU benchmark (issue 23): robustify and the standard suite, on each device side by side in one run.

    python benchmarks/gpu.py                          # every device here (cpu, and cuda when present)
    python benchmarks/gpu.py --devices cuda --photos 8 --fmnist 1000

Two workloads, the same on every device:

* **photos** — the first ``--photos`` of a fixed list of scikit-image photos, centre-cropped to
  512×512, robustified against ``efficientnet-lite0`` with the settings its card recommends at
  ε = 1/255, δ = 8/255 (the default before 2026-12-04, when it became δ from 2/255, escalating), then attacked with the
  standard suite (APGD-CE, APGD-T, FAB-T, Square) at the model input over the image of the ε-ball,
  as ``preempt verify --suite standard`` does;
* **fmnist** — the first ``--fmnist`` Fashion-MNIST test images robustified against
  ``fmnist-linf-pgdat`` (ε = δ = 0.1, defaults), then the standard suite on them (the reproduce rows).

Reported per device and workload: photos (images) per second for robustify and for the suite, the
robust fraction each claims/finds, classifier passes per image, peak memory (CUDA: the allocator's
peak; CPU: the process's peak RSS), and the ratio of each device's throughput to the CPU's.
Results: ``benchmarks/results/gpu.json`` and ``.md`` (rows of earlier runs on other devices are
kept, so the CPU half and the GPU half can be run on different machines and still sit side by side).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
          "retina")


def photos(n: int, size: int = 512) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: skimage photos, resized so the short side is ``size``, centre-cropped."""
    import numpy as np
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS[:n]:
        a = getattr(skimage.data, name)()
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        img = Image.fromarray(a[..., :3].astype(np.uint8))
        s = size / min(img.size)
        img = img.resize((max(size, round(img.width * s)), max(size, round(img.height * s))), Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        out.append(torch.from_numpy(np.array(img.crop((left, top, left + size, top + size)))).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def _peak(dev: torch.device) -> float:
    """Peak memory in MB since the last reset (CUDA allocator) or of the process (CPU, RSS)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def workload(name: str, dev: torch.device, x: torch.Tensor, model_name: str, eps: float, delta: float,
             batch: int) -> dict:
    from harness import robustify_batched

    from preempt import RobustifyConfig, load_model, threat_model
    from preempt.algorithms.robustify import recommended, resolve_init
    from preempt.core.resolution import at_model_input
    from preempt.verdict import run_suite

    model = load_model(model_name, device=dev)
    cfg = RobustifyConfig.of(eps=eps, delta=delta, init=resolve_init("auto", model),
                             **recommended(model))
    x = x.to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    run = robustify_batched(model, x, batch=batch, config=cfg)
    claims, passes = run.claims, run.passes  # robustify's own count (the model-input copy's passes too)
    _sync(dev)
    t_rob = time.perf_counter() - t0
    xr = run.x
    y = model.predict(x)  # robust against the model's own label on the original
    threat = threat_model(cfg.norm, cfg.eps)
    t0 = time.perf_counter()
    robust = []
    for i in range(0, len(xr), batch):
        mi = at_model_input(model, xr[i:i + batch], threat)
        res = run_suite(mi.model, mi.x, y[i:i + batch], threat=mi.threat, suite="standard",
                        generator=torch.Generator(device=dev).manual_seed(0))
        robust += res.robust.tolist()
    _sync(dev)
    t_suite = time.perf_counter() - t0
    n = len(x)
    return {"workload": name, "device": str(dev), "model": model_name, "n": n, "image_size": list(x.shape[1:]),
            "eps": eps, "delta": delta, "robustify_per_s": n / t_rob, "robustify_s": round(t_rob, 1),
            "passes_per_image": passes / n, "claimed_robust": sum(claims) / n, "suite_per_s": n / t_suite,
            "suite_s": round(t_suite, 1), "standard_robust": sum(robust) / n, "peak_mb": round(_peak(dev), 1),
            "machine": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else f"{platform.machine()}, {torch.get_num_threads()} threads"),
            "torch": torch.__version__}


def render(rows: list[dict], command: str) -> str:
    cpu = {r["workload"]: r for r in rows if r["device"] == "cpu"}
    md = ["# GPU benchmark: robustify and the standard suite, per device", "",
          f"`{command}` — photos: 512×512 crops of scikit-image photos against efficientnet-lite0 (ε 1/255, δ 8/255, "
          "the card's settings); fmnist: Fashion-MNIST test images against fmnist-linf-pgdat (ε = δ = 0.1). "
          "Throughput in images per second; × CPU: the ratio to the CPU row of the same workload.", "",
          "| Workload | Device | Machine | n | Robustify img/s | × CPU | Passes / img | Claimed | Suite img/s | × CPU | "
          "Standard-suite robust | Peak MB |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["workload"], r["device"] != "cpu")):
        c = cpu.get(r["workload"])
        rx = f"{r['robustify_per_s'] / c['robustify_per_s']:.1f}" if c else "–"
        sx = f"{r['suite_per_s'] / c['suite_per_s']:.1f}" if c else "–"
        md.append(f"| {r['workload']} | {r['device']} | {r['machine']} | {r['n']} | {r['robustify_per_s']:.3g} | {rx} | "
                  f"{r['passes_per_image']:.0f} | {100 * r['claimed_robust']:.0f}% | {r['suite_per_s']:.3g} | {sx} | "
                  f"{100 * r['standard_robust']:.0f}% | {r['peak_mb']:.0f} |")
    if not any(r["device"].startswith("cuda") for r in rows):
        md += ["", "The GPU half is pending: no GPU machine has been lent to this project yet (CPU rows only)."]
    md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default=None, help="comma-separated (default: cpu, and cuda when present)")
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--fmnist", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workloads", default="fmnist,photos", help="comma-separated: fmnist, photos")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.devices.split(",") if a.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    from preempt.data import fashion_mnist

    xf = fashion_mnist("test")[0][:a.fmnist]
    xp = photos(a.photos) if a.photos else None
    js = a.out.with_suffix(".json")
    doc = json.loads(js.read_text()) if js.exists() else {"rows": []}
    command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:])
    for d in devices:
        dev = torch.device(d)
        todo = [("fmnist", xf, "fmnist-linf-pgdat", 0.1, 0.1)] if "fmnist" in a.workloads else []
        if xp is not None and "photos" in a.workloads:
            todo.append(("photos", xp, "efficientnet-lite0", 1 / 255, 8 / 255))
        for name, x, m, eps, delta in todo:
            row = workload(name, dev, x, m, eps, delta, a.batch if name == "fmnist" else 8)
            row["command"] = command
            doc["rows"] = [r for r in doc["rows"] if not (r["workload"] == name and r["device"] == row["device"])] + [row]
            print(json.dumps(row), flush=True)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            js.write_text(json.dumps(doc, indent=2) + "\n")
            a.out.with_suffix(".md").write_text(render(doc["rows"], command))
    print(f"wrote {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
