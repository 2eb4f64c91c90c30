"""A corpus of real photos, offline and reproducible, split once into a dev and a test half.

    pip install -e ".[photos]"            # foolbox, scikit-image, scikit-learn, matplotlib
    python benchmarks/corpus.py --out corpus/      # writes corpus/dev/*.png and corpus/test/*.png
                                                   # and the same photos at 256 and 224 px (corpus/test-256/, …)

Every photo comes from an installed package (nothing is downloaded, nothing binary is kept in git):

* foolbox's 20 labelled ImageNet JPEGs (``foolbox/data/imagenet_NN_LABEL.jpg``, 224×224);
* scikit-image's photos that ship in its wheel (``skimage.data``): astronaut, chelsea, coffee,
  rocket, the left view of stereo_motorcycle, hubble_deep_field, immunohistochemistry, retina, and
  the grey camera, clock, coins, moon and brick (kept grey: a service sees them so);
* scikit-learn's two sample photos (china, flower);
* matplotlib's sample photo of Grace Hopper.

The split is fixed by the photos' names alone (sha256 of the name, sorted, alternating), so it does
not depend on package versions or on the order the script finds them; ``corpus.json`` (committed
beside the results) records each photo's source, size, split and the sha256 of its pixels, so a rerun
on other package versions says when a photo changed.  Robustness is judged against the model's own
label on the original (``label`` in the JSON is foolbox's ImageNet label where there is one).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
RECORD = HERE / "results" / "corpus.json"
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field",
           "immunohistochemistry", "retina", "camera", "clock", "coins", "moon", "brick")


def sources() -> Iterator[tuple[str, str, np.ndarray, int | None]]:
    """(name, source, (H, W) or (H, W, 3) uint8 pixels, ImageNet label or None) of every photo."""
    import foolbox
    import matplotlib
    import skimage.data
    from sklearn.datasets import load_sample_images

    for f in sorted((Path(foolbox.__file__).parent / "data").glob("imagenet_*.jpg")):
        with Image.open(f) as im:
            yield f"foolbox-{f.stem}", f"foolbox {foolbox.__version__}: data/{f.name}", np.asarray(im.convert("RGB")), \
                int(f.stem.split("_")[-1])
    for name in SKIMAGE:
        a = getattr(skimage.data, name)()
        a = a[0] if isinstance(a, tuple) else a  # stereo_motorcycle: (left, right, disparity)
        yield f"skimage-{name}", f"scikit-image {skimage.__version__}: skimage.data.{name}()", np.asarray(a, np.uint8), None
    imgs = load_sample_images()
    for fname, a in zip(imgs.filenames, imgs.images):
        stem = Path(fname).stem
        yield f"sklearn-{stem}", f"scikit-learn: load_sample_images() {Path(fname).name}", np.asarray(a, np.uint8), None
    f = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(f) as im:
        yield "matplotlib-grace_hopper", f"matplotlib {matplotlib.__version__}: sample_data/{f.name}", \
            np.asarray(im.convert("RGB")), None


def split(names: list[str]) -> dict[str, str]:
    """dev / test by the sha256 of the name: sorted by it, alternating (halves differ by at most one)."""
    order = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return {n: ("dev" if i % 2 == 0 else "test") for i, n in enumerate(order)}


def build(out: Path) -> list[dict]:
    items = list(sources())
    halves = split([n for n, *_ in items])
    rows = []
    for name, src, a, label in items:
        d = out / halves[name]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / f"{name}.png")
        rows.append({"name": name, "split": halves[name], "source": src, "size": [int(a.shape[1]), int(a.shape[0])],
                     "channels": 1 if a.ndim == 2 else 3, "imagenet_label": label,
                     "pixels_sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()})
    return sorted(rows, key=lambda r: (r["split"], r["name"]))


def small(out: Path, size: int) -> int:
    """Each photo of ``out``/dev and ``out``/test again at the model's own scale: shorter side ``size`` px
    (Lanczos), into ``out``/dev-SIZE and ``out``/test-SIZE.  At 256 px EfficientNet-Lite0's resize is the identity,
    so the file's ε-ball *is* the model-input ball on the centre crop (no averaging downsample shields the photo).
    Returns the number of photos written."""
    n = 0
    for f, dst in _halves(out, str(size)):
        with Image.open(f) as im:
            w, h = im.size
            s = size / min(w, h)
            im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.LANCZOS).save(dst / f.name)
        n += 1
    return n


def _halves(out: Path, tag: str) -> Iterator[tuple[Path, Path]]:
    """(photo, folder its variants go to) for every photo of ``out``/dev and ``out``/test: ``out``/dev-TAG, …"""
    for half in ("dev", "test"):
        dst = out / f"{half}-{tag}"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted((out / half).glob("*.png")):
            yield f, dst


def scenes(out: Path, size: int = 256, min_side: int = 2 * 256) -> int:
    """Crops of ``size`` × ``size`` px (a non-overlapping grid) from every photo whose shorter side is at least
    ``min_side``: scenes at the model's own size whose label the model is often unsure of (a patch of sky, water,
    texture), into ``out``/dev-scenes and ``out``/test-scenes; a crop keeps its photo's split.  Returns their number."""
    n = 0
    for f, dst in _halves(out, "scenes"):
        with Image.open(f) as im:
            w, h = im.size
            if min(w, h) < min_side:
                continue
            for top in range(0, h - size + 1, size):
                for left in range(0, w - size + 1, size):
                    im.crop((left, top, left + size, top + size)).save(dst / f"{f.stem}-crop{top}x{left}.png")
                    n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("corpus"), help="folder for dev/ and test/ (default corpus/)")
    ap.add_argument("--record", type=Path, default=RECORD, help="where to write the corpus record (JSON)")
    ap.add_argument("--sizes", default="256,224", help="also write every photo at these shorter sides (dev-S/, test-S/)")
    args = ap.parse_args()
    rows = build(args.out)
    print(f"{scenes(args.out)} crops of 256 px -> {args.out}/{{dev,test}}-scenes/")
    for size in [int(v) for v in args.sizes.split(",") if v]:
        print(f"{small(args.out, size)} photos at {size} px -> {args.out}/{{dev,test}}-{size}/")
    if args.record.exists():
        old = {r["name"]: r["pixels_sha256"] for r in json.loads(args.record.read_text())["photos"]}
        changed = [r["name"] for r in rows if r["name"] in old and old[r["name"]] != r["pixels_sha256"]]
        if changed:
            print(f"warning: pixels differ from the committed record for {', '.join(changed)}")
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps({"command": "python benchmarks/corpus.py --out corpus/", "photos": rows}, indent=1) + "\n")
    n = {s: sum(r["split"] == s for r in rows) for s in ("dev", "test")}
    print(f"{len(rows)} photos: {n['dev']} dev, {n['test']} test -> {args.out}/")


if __name__ == "__main__":
    main()
