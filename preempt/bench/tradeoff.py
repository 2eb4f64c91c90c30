"""The robustness–accuracy trade-off, measured (Tsipras, Santurkar, Engstrom, Turner & Madry,
"Robustness May Be at Odds with Accuracy", ICLR 2019, section 2).

The distribution: a label y ∈ {−1, +1} uniformly; one robust feature x₁ = +y with probability p
(else −y); d weak features x₂ … x_{d+1} ~ N(ηy, 1) with η = 3/√d.  The attacker moves x by at most
ε = 2η in ℓ∞.  Two linear classifiers:

* f_std(x) = sign(Σ_{i≥2} x_i / d), the average of the weak features: clean accuracy
  P(N(η, 1/d) > 0) = Φ(η√d) = Φ(3) ≈ 99.87%, while the attacker shifts every weak feature by −εy,
  turning their mean into −η: robust accuracy Φ(−3) ≈ 0.13%;
* f_rob(x) = sign(x₁): clean accuracy p, and since ε < 1 no attack flips x₁: robust accuracy p.

So the accurate classifier is not robust and the robust one is less accurate, at every d > 36 (where
ε = 2η < 1; below it the attacker can flip x₁ too and f_rob's robust accuracy is 0).
:func:`tradeoff` samples the distribution, attacks each classifier with its optimal ℓ∞ attack (for a
linear classifier sign(w·x), the point x − ε·y·sign(w) clipped nowhere: there is no pixel box here),
and reports the sampled accuracies beside the closed forms.

Example::

    from preempt.bench.tradeoff import tradeoff
    rows = tradeoff(dims=(50, 100, 400), n=20_000, seed=0)
    rows[0]["f_std"]["clean"], rows[0]["f_std"]["closed_form"]["clean"]
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def closed_forms(d: int, p: float = 0.95) -> dict[str, dict[str, float]]:
    """The exact clean and ℓ∞-robust accuracies of f_std and f_rob for dimension d (ε = 2η)."""
    eta = 3 / math.sqrt(d)
    return {"f_std": {"clean": _phi(eta * math.sqrt(d)), "robust": _phi(-eta * math.sqrt(d))},
            "f_rob": {"clean": p, "robust": p if 2 * eta < 1 else 0.0}}


def sample(n: int, d: int, p: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of the distribution: (x (n, d+1), y (n,) in {−1, +1})."""
    y = torch.randint(0, 2, (n,), generator=generator).mul_(2).sub_(1).double()
    keep = torch.rand(n, generator=generator, dtype=torch.float64) < p
    x1 = torch.where(keep, y, -y)
    eta = 3 / math.sqrt(d)
    weak = eta * y[:, None] + torch.randn(n, d, generator=generator, dtype=torch.float64)
    return torch.cat([x1[:, None], weak], 1), y


def _accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    """Clean and ℓ∞-robust accuracy of sign(w·x); the optimal attack moves every coordinate by ε
    against y·sign(w) (it lowers y·w·x by ε·‖w‖₁, the most any ℓ∞ move of size ε can)."""
    clean = (torch.sign(x @ w) == y).double().mean().item()
    x_adv = x - eps * y[:, None] * torch.sign(w)[None, :]
    robust = ((torch.sign(x_adv @ w) == y) & (torch.sign(x @ w) == y)).double().mean().item()
    return clean, robust


def tradeoff(dims: Sequence[int] = (50, 100, 400, 1600), *, n: int = 20_000, p: float = 0.95,
             seed: int = 0) -> list[dict]:
    """For each d: sampled clean and robust accuracy of f_std and f_rob beside their closed forms."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for d in dims:
        x, y = sample(n, d, p, gen)
        eps = 2 * 3 / math.sqrt(d)
        w_std = torch.cat([torch.zeros(1, dtype=torch.float64), torch.full((d,), 1 / d, dtype=torch.float64)])
        w_rob = torch.zeros(d + 1, dtype=torch.float64)
        w_rob[0] = 1.0
        exact = closed_forms(d, p)
        row: dict = {"d": d, "eta": 3 / math.sqrt(d), "eps": eps, "n": n, "p": p}
        for name, w in (("f_std", w_std), ("f_rob", w_rob)):
            clean, robust = _accuracy(w, x, y, eps)
            row[name] = {"clean": clean, "robust": robust, "closed_form": exact[name]}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| d | η | ε = 2η | f_std clean | (closed form) | f_std robust | (closed form) | f_rob clean | (closed form) "
             "| f_rob robust | (closed form) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r['d']}", f"{r['eta']:.3f}", f"{r['eps']:.3f}"]
        for name in ("f_std", "f_rob"):
            for k in ("clean", "robust"):
                cells += [f"{100 * r[name][k]:.2f}%", f"{100 * r[name]['closed_form'][k]:.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    """Clean and robust accuracy of both classifiers against d (matplotlib, optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = [r["d"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, colour in (("f_std", "tab:blue"), ("f_rob", "tab:orange")):
        ax.plot(ds, [100 * r[name]["clean"] for r in rows], "o-", color=colour, label=f"{name} clean")
        ax.plot(ds, [100 * r[name]["robust"] for r in rows], "s--", color=colour, label=f"{name} robust (ℓ∞, ε = 2η)")
    ax.set_xscale("log")
    ax.set_xlabel("weak features d")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Tsipras et al. 2019: accuracy or robustness (sampled)")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
