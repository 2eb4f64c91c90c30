"""Reports: the JSON document ``preempt verify --json`` prints, and a self-contained HTML page."""
from __future__ import annotations

import base64
import html
import io
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..version import __version__
from .photos import PhotoError, load_photo, to_pil, write_atomic

SCHEMA_VERSION = 2  # 2: label_after_attack; flag not_monotone_in_eps renamed eps_sweep


def summarize(results, attack: dict, *, model: str, device: str, flags=()) -> dict:
    """The verify JSON document (schema in the README)."""
    ok = [r for r in results if r.status != "failed"]
    robust = sum(r.status == "robust" for r in ok)
    with_orig = [r for r in ok if "original_robust" in r.metrics]
    s = {"images": len(results), "verified": len(ok), "failed": len(results) - len(ok), "robust": robust,
         "not_robust": len(ok) - robust, "robust_accuracy": robust / len(ok) if ok else 0.0,
         "clean_accuracy": sum(r.metrics["clean_correct"] for r in ok) / len(ok) if ok else 0.0}
    if with_orig:
        s["original_robust"] = sum(r.metrics["original_robust"] for r in with_orig)
        s["original_robust_accuracy"] = s["original_robust"] / len(with_orig)
    s["per_attack"] = _per_attack(ok, attack.get("attacks", []), "broken_by")
    if with_orig:
        s["original_per_attack"] = _per_attack(with_orig, attack.get("attacks", []), "original_broken_by")
    certs = [r.metrics["certificate"] for r in ok if "certificate" in r.metrics]
    if certs:
        s["certified"] = {"abstain": sum(c["abstain"] for c in certs),
                          "mean_radius": sum(c["radius"] for c in certs) / len(certs),
                          "certified_at_eps": sum(c["certified_at_eps"] for c in certs)}
    return {"schema": SCHEMA_VERSION, "preempt": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model, "device": device, "attack": attack, "summary": s,
            "flags": [f.to_dict() for f in flags],
            "images": [r.to_dict() for r in results]}


def _per_attack(results, attacks: list[str], key: str) -> dict:
    """Robust accuracy after the clean check and after each attack in turn (cumulative)."""
    if not results:
        return {}
    out, alive = {}, [r.metrics.get(key) for r in results]
    for name in ["clean", *attacks]:
        alive = [b for b in alive if b != name]
        out[name] = len(alive) / len(results)
    return out


def broken_by(m: dict) -> str:
    """What broke an image, in words; for a service transform, with the order
    ("attack, then jpeg:85", "jpeg:85, then attack", "jpeg:85 alone")."""
    b = m.get("broken_by")
    if not b:
        return ""
    how = (m.get("uploads") or {}).get(b)
    words: dict[str | None, str] = {"no attack": f"{b} alone", "after": f"attack, then {b}", "before": f"{b}, then attack"}
    return words.get(how, b)


def after_attack(m: dict) -> str:
    """The label the attack's adversarial point got ("" where unbroken; "–" where it broke through a
    service transform, whose output is not kept)."""
    if not m.get("broken_by") or m["broken_by"] == "clean":
        return ""
    if "label_after_attack" not in m:
        return "–"
    return str(m.get("label_name_after_attack") or m["label_after_attack"])


def _verdict(f: dict) -> str:
    from ..attacks.honesty import Flag

    return Flag(f["name"], f["raised"], f["detail"]).verdict


def _png_b64(im: Image.Image, max_side: int = 256) -> str:
    im = im.copy()
    if max(im.size) > max_side or max(im.size) < 64:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _diff_image(a: np.ndarray, b: np.ndarray) -> Image.Image:
    d = a.astype(np.float32) - b.astype(np.float32)
    m = float(np.abs(d).max()) or 1.0
    v = np.clip(127.5 + d * (127.5 / m), 0, 255).astype(np.uint8)
    return Image.fromarray(v[:, :, 0] if v.shape[2] == 1 else v)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}.ok{color:#137333;font-weight:600}
.bad{color:#b3261e;font-weight:600}figure{display:inline-block;margin:4px;text-align:center}figure img{image-rendering:pixelated;
border:1px solid #ddd}.photo{border-top:1px solid #ddd;padding:1em 0}code{background:#f6f6f6;padding:1px 4px}"""


def write_html(path: str | Path, summary: dict, results) -> None:
    """One self-contained HTML file: summary, attack parameters, and per photo the image, its
    original and their difference amplified to the full range."""
    s, a = summary["summary"], summary["attack"]
    yes = lambda b: '<span class="ok">yes</span>' if b else '<span class="bad">no</span>'
    rows, photos = [], []
    for r in results:
        name = html.escape(Path(r.src).name)
        if r.status == "failed":
            rows.append(f"<tr><td>{name}</td><td colspan=9 class=bad>failed: {html.escape(r.error or '')}</td></tr>")
            continue
        m = r.metrics
        rows.append(f"<tr><td>{name}</td><td>{html.escape(r.label_name or str(r.label))}</td>"
                    f"<td>{yes(m['clean_correct'])}</td><td>{yes(m['robust'])}</td><td>{html.escape(broken_by(m))}</td>"
                    f"<td>{html.escape(after_attack(m))}</td>"
                    f"<td>{yes(m['original_robust']) if 'original_robust' in m else '–'}</td>"
                    f"<td>{m.get('linf_to_original', float('nan')):.4f}</td>"
                    f"<td>{m.get('psnr_to_original', float('nan')):.1f}</td><td>{m.get('ssim_to_original', float('nan')):.3f}</td></tr>")
        figs = []
        try:
            p = load_photo(r.src)
            figs.append(f'<figure><img src="{_png_b64(to_pil(p))}"><figcaption>robustified</figcaption></figure>')
            if r.original:
                o = load_photo(r.original)
                figs.insert(0, f'<figure><img src="{_png_b64(to_pil(o))}"><figcaption>original</figcaption></figure>')
                dmax = int(abs(p.pixels.astype(int) - o.pixels.astype(int)).max())
                figs.append(f'<figure><img src="{_png_b64(_diff_image(p.pixels, o.pixels))}">'
                            f'<figcaption>difference, amplified: grey = unchanged,<br>lighter/darker = raised/lowered,'
                            f'<br>full range = the largest change ({dmax}/255)</figcaption></figure>')
        except PhotoError:
            pass
        label = html.escape(r.label_name or str(r.label))
        flip = (f"; after {html.escape(broken_by(m))}: {html.escape(after_attack(m))}" if after_attack(m) not in ("", "–")
                else "")
        photos.append(f'<div class="photo"><h3>{name}: robust {yes(m["robust"])} (label {label}{flip})</h3>'
                      f'{"".join(figs)}</div>')
    pgd_line = (f"; PGD step {a['step_size']:g}, random start, {a['restarts']} restart(s)"
                if a.get("suite", "pgd") == "pgd" else "")
    pa, po = s.get("per_attack", {}), s.get("original_per_attack", {})
    per_attack = ("<table><tr><th>after</th><th>robustified</th>" + ("<th>originals</th>" if po else "") + "</tr>"
                  + "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1%}</td>"
                            + (f"<td>{po.get(k, float('nan')):.1%}</td>" if po else "") + "</tr>" for k, v in pa.items())
                  + "</table>") if pa else ""
    fl = summary.get("flags", [])
    flags_html = ("<h2>Checks</h2><ul>" + "".join(
        f'<li class="{"bad" if f["raised"] else "ok"}">{"⚠ flag: " if f["raised"] else "✓ passed: "}{html.escape(_verdict(f))} '
        f'(<code>{html.escape(f["name"])}</code>: {html.escape(f["detail"])})</li>' for f in fl) + "</ul>") if fl else ""
    orig_line = (f"<p>Originals: {s['original_robust_accuracy']:.1%} robust ({s['original_robust']}/{s['verified']}).</p>"
                 if "original_robust_accuracy" in s else "")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>preempt verify report</title>
<style>{_CSS}</style></head><body>
<h1>preempt verify</h1>
<p>Model <code>{html.escape(summary['model'])}</code>; attacks {html.escape(', '.join(a.get('attacks', [])))}
({html.escape(a['norm'])}, ε = {a['eps']:g}{pgd_line}, seed {a['seed']}); preempt {summary['preempt']},
torch {summary['torch']}, {summary['created']}.</p>
{per_attack}
{flags_html}
<p><b>Robust accuracy {s['robust_accuracy']:.1%}</b> ({s['robust']}/{s['verified']} robust; clean accuracy {s['clean_accuracy']:.1%};
{s['failed']} failed).</p>{orig_line}
<table><tr><th>file</th><th>label</th><th>clean correct</th><th>robust</th><th>broken by</th><th>label after attack</th><th>original robust</th><th>ℓ∞ to original</th><th>PSNR (dB)</th><th>SSIM</th></tr>
{''.join(rows)}</table>
{''.join(photos)}
</body></html>"""
    write_atomic(path, doc.encode())
