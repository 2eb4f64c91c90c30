"""Same pixels, passes and verdicts before and after a refactor (the bit-for-bit check).

    python tests/identical.py --save /tmp/before.pt      # on the old code (PYTHONPATH=old checkout)
    python tests/identical.py --compare /tmp/before.pt   # on the new code: exit 1 on any difference
    python tests/identical.py --photo corpus/test/skimage-chelsea.png --save /tmp/photo-before.pt  # (and --compare)
    python tests/identical.py --digest tests/golden/identical.json   # the digests tests/test_identical.py compares

``tests/test_identical.py`` (a slow test: ``pytest --slow``) runs :func:`run` and compares its digests with the
committed ones, on the CPU class, torch version and thread count they were recorded with (elsewhere float
rounding may legitimately differ, so it skips and says why).

Runs, on 40 Fashion-MNIST test images against the ℓ∞ and ℓ2 ADV models: robustify under each check
preset (the default strong check on all 40, the others on 10), ``judge`` (robustify's check on
written pixels, with and without a service transform), every verify suite that needs no surrogate,
``verify_files`` on written PNGs (with ``--uploads``), and records every output tensor, pass count
and verdict.  About two minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from preempt import RobustifyConfig, load_model, robustify, threat_model
from preempt.data import fashion_mnist


def _check_kw(name: str) -> dict:
    """A check preset as RobustifyConfig keywords (whichever way the code under test spells it)."""
    from preempt.verdict import check as c

    preset = c.CHECKS[name]
    return {"check": preset} if not isinstance(preset, dict) else dict(preset)


def _suites() -> dict[str, str]:
    """Recorded name -> the suite to run: verify's one-start default was "strong" until 2026-12-07, then "strong-once"
    (when "strong" became robustify's two-start check, a suite the older code does not have: left out here)."""
    from preempt.verdict.check import SUITES

    once = "strong-once" if "strong-once" in SUITES else "strong"
    return {("strong" if n == once else n): n for n in SUITES if n not in ("blackbox", "rand") and
            not (n == "strong" and once == "strong-once")}


def run() -> dict:
    from preempt.algorithms.robustify import judge
    try:
        from preempt.verdict.check import run_suite
    except ImportError:  # before the Check
        from preempt.attacks.suite import run_suite  # type: ignore[no-redef]
    from preempt.pipeline.photos import save_image
    from preempt.pipeline.verify_job import VerifyConfig, verify_files

    torch.manual_seed(0)
    x, y = fashion_mnist("test")
    x, y = x[:40], y[:40]
    out: dict = {}
    for name in ("fmnist-linf-pgdat", "fmnist-l2-pgdat"):
        model = load_model(name)
        tm = model.card["threat_model"]
        norm, eps, delta = tm["norm"], tm["eps"], tm["delta"]
        with torch.inference_mode():
            yp = model.predict(x)
        for preset in ("strong", "strong-once", "pgd", "thorough"):
            n = 40 if preset == "strong" else 10
            cfg = RobustifyConfig(norm=norm, eps=eps, delta=delta, seed=1, **_check_kw(preset))
            r = robustify(model, x[:n], yp[:n], config=cfg)
            out[f"{name}/robustify-{preset}/x"] = r.x
            out[f"{name}/robustify-{preset}/meta"] = [(i.robust, i.passes, i.steps) for i in r.images]
        cfg = RobustifyConfig(norm=norm, eps=eps, delta=delta, seed=1)
        xr = out[f"{name}/robustify-strong/x"]
        ok, p, det = judge(model, xr[:8], yp[:8], cfg, generator=torch.Generator().manual_seed(3))
        out[f"{name}/judge"] = (ok.tolist(), p, det)
        cfg_up = RobustifyConfig(norm=norm, eps=eps, delta=delta, seed=1, survive="jpeg:90")
        ok, p, det = judge(model, xr[:4], yp[:4], cfg_up, generator=torch.Generator().manual_seed(4))
        out[f"{name}/judge-upload"] = (ok.tolist(), p, det)
        for suite, actual in _suites().items():
            n = 40 if suite in ("pgd", "strong", "quick") else 8
            s = run_suite(model, xr[:n], yp[:n], threat=threat_model(norm, eps), suite=actual,
                          generator=torch.Generator().manual_seed(5))
            out[f"{name}/suite-{suite}"] = (s.robust.tolist(), s.broken_by, dict(s.passes), s.x_adv)
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i in range(6):
                p_ = Path(d) / f"img{i}.png"
                save_image(xr[i], p_)
                paths.append(p_)
            for suite, uploads in (("strong", None), ("pgd", "jpeg:90")):
                rep = verify_files(paths, model, config=VerifyConfig(norm=norm, eps=eps, suite=_suites()[suite],
                                                                     uploads=uploads))
                out[f"{name}/verify-{suite}"] = [(Path(r.src).name, r.status, r.label, r.metrics) for r in rep.files]
    return out


def run_photo(path: Path) -> dict:
    """One real photo against efficientnet-lite0 (the model-input path): a short robustify with the
    card's attackers, and verify's default suite on the written PNG."""
    from preempt.algorithms.robustify import recommended
    from preempt.pipeline.photos import load_photo, save_image
    from preempt.pipeline.verify_job import VerifyConfig, verify_files

    model = load_model("efficientnet-lite0")
    x = load_photo(path).tensor()[None]
    with torch.inference_mode():
        y = model.predict(x)
    rec = recommended(model)
    rec.pop("max_delta", None)
    if "check" not in rec:  # before the Check: the card's check_* keys came back as fields
        rec = {**_check_kw("strong"), **rec}
    make = getattr(RobustifyConfig, "of", RobustifyConfig)  # flat settings (before the typed parts: the fields)
    cfg = make(eps=1 / 255, delta=8 / 255, steps=6, min_steps=2, check_every=2, seed=2, **rec)
    r = robustify(model, x, y, config=cfg)
    out = {"photo/x": r.x, "photo/meta": [(i.robust, i.passes, i.steps) for i in r.images]}
    with tempfile.TemporaryDirectory() as d:
        p_ = Path(d) / "photo.png"
        save_image(r.x[0], p_)
        rep = verify_files([p_], model, config=VerifyConfig(eps=1 / 255, suite=_suites()["strong"]))
        out["photo/verify"] = [(f.status, f.label, f.metrics.get("broken_by")) for f in rep.files]
    return out


def same(a, b, key: str = "") -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return [] if ok else [key]
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [f"{key}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        return diffs + [d for k in a if k in b and k != "seconds" for d in same(a[k], b[k], f"{key}/{k}")]  # wall time
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{key}: length {len(a)} != {len(b)}"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in same(u, v, f"{key}[{i}]")]
    return [] if a == b else [f"{key}: {a!r} != {b!r}"]


def digests(out: dict) -> dict:
    """Each result as something JSON keeps exactly: a tensor as its shape and the sha256 of its bytes, the rest as
    its repr (wall times dropped)."""
    import hashlib

    def one(v):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            return f"tensor{tuple(t.shape)} {t.dtype} sha256:{hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]}"
        if isinstance(v, dict):
            return {str(k): one(w) for k, w in v.items() if k != "seconds"}
        if isinstance(v, (list, tuple)):
            return [one(w) for w in v]
        return repr(v)
    return {k: one(v) for k, v in out.items()}


def environment() -> dict:
    """What bit-identical results depend on beyond the code: the CPU's vector extensions, torch, threads."""
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    except OSError:
        pass
    return {"cpu": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path)
    g.add_argument("--compare", type=Path)
    g.add_argument("--digest", type=Path, help="write the digests and the environment as JSON (the slow test's golden)")
    ap.add_argument("--photo", type=Path, default=None, help="instead: one real photo against efficientnet-lite0")
    args = ap.parse_args()
    out = run_photo(args.photo) if args.photo else run()
    if args.digest:
        import json

        args.digest.parent.mkdir(parents=True, exist_ok=True)
        args.digest.write_text(json.dumps({"environment": environment(), "results": digests(out)}, indent=1) + "\n")
        print(f"{len(out)} digests written to {args.digest}")
        return
    if args.save:
        torch.save(out, args.save)
        print(f"{len(out)} results saved to {args.save}")
        return
    before = torch.load(args.compare, weights_only=False)  # our own file, written by --save
    diffs = same(before, out)
    print("\n".join(diffs[:50]) or f"identical: {len(out)} results")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
