"""Which attacker breaks a robustified photo: the dev-half diagnostic behind the ImageNet cards' settings.

    python benchmarks/archive/target_margins.py foolbox-imagenet_00_243,foolbox-imagenet_04_949 \
        "inner_loss=margin-mt;inner_steps=2;inner_targets=9;inner_eps_scale=1.5;steps=30;early_stop=false" --delta 8/255

Robustifies each named photo of ``corpus/dev`` (``benchmarks/corpus.py``) with the variant (fields of
:class:`preempt.RobustifyConfig`, as in ``real_photos.py``), then attacks the written pixels at the
model input over the image of the ε-ball with APGD (100 iterations) targeted at each of the 9
likeliest wrong classes in turn (the targets of AutoAttack's APGD-T) and with untargeted APGD-CE.
Per target it prints the final margin z_y − z_t at the attack's point (an ``X``: that target broke
the photo, the attack stopping at the first success), so one sees whether the attackers robustify
ran covered the classes an attacker uses.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from preempt import Linf, RobustifyConfig, load_model, robustify
from preempt.attacks.auto_pgd import apgd
from preempt.budget import parse_budget
from preempt.core.resolution import at_model_input
from preempt.pipeline.photos import load_photo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # archived: its sibling modules are in benchmarks/
from real_photos import parse_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("photos", help="comma-separated stems of corpus/dev photos")
    ap.add_argument("variant", help="key=value;key=value (RobustifyConfig fields)")
    ap.add_argument("--delta", default="8/255")
    ap.add_argument("--eps", default="1/255")
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--model", default="efficientnet-lite0")
    args = ap.parse_args()
    m = load_model(args.model)
    eps, delta = parse_budget(args.eps), parse_budget(args.delta)
    _, kw = parse_variant("v:" + args.variant)
    for name in args.photos.split(","):
        x = load_photo(args.corpus / "dev" / f"{name}.png").tensor()[None]
        y = m.predict(x)
        t = time.perf_counter()
        r = robustify(m, x, y, config=RobustifyConfig.of(norm="linf", eps=eps, delta=delta, **kw))
        dt = time.perf_counter() - t
        mi = at_model_input(m, r.x, Linf(eps))
        with torch.no_grad():
            z = mi.model(mi.x)
        others = z.scatter(1, y[:, None], -1e9)
        cells = []
        for rank, target in enumerate(others[0].argsort(descending=True)[:9].tolist()):
            a = apgd(mi.model, mi.x, y, threat=mi.threat, steps=100, target=torch.tensor([target]),
                     generator=torch.Generator().manual_seed(rank))
            with torch.no_grad():
                za = mi.model(a.x_adv)
            cells.append(f"{rank}:{(za[0, y] - za[0, target]).item():+.1f}{'X' if a.success.item() else ''}")
        ce = apgd(mi.model, mi.x, y, threat=mi.threat, steps=100, generator=torch.Generator().manual_seed(99))
        im = r.images[0]
        print(f"{name} claimed {im.robust} margin {(z[0, y] - others.max()).item():.1f} ce-broke {ce.success.item()} "
              f"{' '.join(cells)} passes {im.passes} psnr {im.psnr:.1f} {dt:.0f}s", flush=True)


if __name__ == "__main__":
    main()
