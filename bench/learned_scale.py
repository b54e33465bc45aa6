"""Learned Gaussian noise: ``pp.Gaussian(N, scale="learned")`` against Pyro's "Bayesian Regression - Introduction"
tutorial loop, on a synthetic dataset of the tutorial's shape.

The tutorial regresses log GDP (around 9) on ``cont_africa``, ``rugged`` and their product for 170 nations with
``Linear(3, 1)``, weight prior ``Normal(0, 1)``, bias prior ``Normal(0, 10)``, ``sigma ~ Uniform(0, 10)`` as a latent,
``AutoNormal``, Adam at ``lr=0.03`` for 1500 steps.  The data are not available offline, so :func:`tutorial_data`
draws 170 rows of the same shape and scale (about 30 % African nations, ruggedness in [0, 6.2], the tutorial's
fitted coefficients and noise 0.95).

Four curves, one step = one full-batch SVI step at the same learning rate and seed:

* ``hand``: the tutorial's own model and loop (``pyro.infer.SVI``, ``Trace_ELBO``); its sigma starts at 5, the
  median of ``Uniform(0, 10)``;
* ``ours``: ``pp.bayesianize(nn.Linear(3, 1), priors, pp.Gaussian(170, scale="learned"))`` and ``pp.fit`` with
  ``AutoNormal`` (sigma a point estimate started at the RMS residual of the first batch, the default);
* ``ours, init_scale=1``: the same with sigma started at 1 (the default before issue 14);
* ``ours, fixed sigma``: the noise fixed at the true 0.95.

A curve has *converged* at the first step from which the running mean (25 steps) of its loss per example stays
within ``--tol`` of the hand loop's final level (its last 100 steps) and its sigma within 10 % of the hand loop's
final sigma (the hand loop's own sigma, a posterior median under noisy gradients, wanders by ~5 %).

Run from the repository root: ``python bench/learned_scale.py [--steps 1500] [--before-steps 6000] [--plot f.png]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyro_prune as pp  # noqa: E402

Curve = Dict[str, List[float]]


def tutorial_data(n: int = 170, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 3), y (n,))``: ``[cont_africa, rugged, cont_africa * rugged]`` and a log GDP of the tutorial's scale."""
    g = torch.Generator().manual_seed(seed)
    africa = (torch.rand(n, generator=g) < 0.3).float()
    rugged = (-1.3 * torch.rand(n, generator=g).log()).clamp(max=6.2)
    x = torch.stack([africa, rugged, africa * rugged], 1)
    y = 9.2 - 1.85 * africa - 0.2 * rugged + 0.35 * africa * rugged + 0.95 * torch.randn(n, generator=g)
    return x, y


class TutorialRegression(PyroModule):
    """The tutorial's ``BayesianRegression``: sigma is a latent with a ``Uniform(0, 10)`` prior."""

    def __init__(self, in_features: int = 3):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def hand_loop(x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int = 0) -> Curve:
    """The tutorial's loop: ``{"loss": per-example -ELBO per step, "sigma": posterior median per step}``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = TutorialRegression(x.shape[1])
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    out: Curve = {"loss": [], "sigma": []}
    for _ in range(steps):
        out["loss"].append(svi.step(x, y) / len(x))
        out["sigma"].append(float(guide.median()["sigma"]))
    return out


def ours(x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int = 0, **gaussian) -> Curve:
    """``pp.fit`` of a bare ``Linear(3, 1)`` with ``AutoNormal``; ``gaussian``: ``Gaussian``'s keyword arguments."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    priors = {"weight": dist.Normal(0.0, 1.0), "bias": dist.Normal(0.0, 10.0)}
    model = pp.bayesianize(nn.Linear(x.shape[1], 1), priors, pp.Gaussian(len(x), **gaussian))
    sigma: List[float] = []
    lik = model.likelihood

    def record(epoch, rec, model, guide):
        sigma.append(float(lik.scale.detach()) if lik.mode == "learned" else lik.fixed_scale)

    hist = pp.fit(model, AutoNormal(model), (x, y), epochs=steps, lr=lr, progress=False, callbacks=[record])
    return {"loss": [r["loss"] for r in hist.records], "sigma": sigma}


def running_mean(values: List[float], window: int = 25) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])
    idx = torch.arange(len(t))
    lo = (idx + 1 - window).clamp(min=0)
    return (c[idx + 1] - c[lo]) / (idx + 1 - lo)


def converged_step(curve: Curve, loss_ref: float, sigma_ref: float, tol: float) -> Optional[int]:
    """First step from which the running-mean loss stays below ``loss_ref + tol`` and sigma within 10 % of
    ``sigma_ref`` (``None`` if never)."""
    ok = (running_mean(curve["loss"]) <= loss_ref + tol) & (
        (torch.tensor(curve["sigma"], dtype=torch.float64) - sigma_ref).abs() <= 0.1 * sigma_ref
    )
    bad = (~ok).nonzero()
    if len(bad) == 0:
        return 0
    last_bad = int(bad[-1])
    return None if last_bad == len(ok) - 1 else last_bad + 1


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500, help="steps of the hand loop and of ours (default 1500)")
    ap.add_argument("--before-steps", type=int, default=6000, help="steps of ours with init_scale=1 (default 6000)")
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=0.03, help="loss tolerance per example for 'converged'")
    ap.add_argument("--plot", default=None, help="write the loss and sigma curves to this image file")
    return ap.parse_args(argv)


def plot(curves: Dict[str, Curve], path: str) -> None:
    import matplotlib  # optional: only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        a.plot(running_mean(c["loss"]).numpy(), label=name)
        b.plot(c["sigma"], label=name)
    a.set(xlabel="step", ylabel="loss per example (running mean 25)", yscale="log", title="-ELBO / N")
    b.set(xlabel="step", ylabel="sigma", yscale="log", title="noise scale")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> Dict[str, Curve]:
    args = parse_args(argv)
    x, y = tutorial_data(seed=args.seed)
    runs = {
        "hand (tutorial)": lambda: hand_loop(x, y, args.steps, args.lr, args.seed),
        "ours": lambda: ours(x, y, args.steps, args.lr, args.seed, scale="learned"),
        "ours, init_scale=1": lambda: ours(x, y, args.before_steps, args.lr, args.seed, scale="learned", init_scale=1),
        "ours, fixed sigma": lambda: ours(x, y, args.steps, args.lr, args.seed, scale=0.95),
    }
    curves, times = {}, {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        curves[name] = run()
        times[name] = time.perf_counter() - t0
    hand = curves["hand (tutorial)"]
    loss_ref = sum(hand["loss"][-100:]) / len(hand["loss"][-100:])
    sigma_ref = hand["sigma"][-1]
    marks = [m for m in (0, 50, 100, 200, 400, 700, 1000, 1499, 3000, 5999) if m < max(args.steps, args.before_steps)]
    print(f"lr={args.lr}, seed={args.seed}; hand loop final: loss {loss_ref:.4f}, sigma {sigma_ref:.4f}")
    print(f"{'curve':22s} {'converged':>9s} {'s':>6s}  " + "  ".join(f"{m:>11d}" for m in marks))
    for name, c in curves.items():
        step = converged_step(c, loss_ref, sigma_ref, args.tol)
        rm = running_mean(c["loss"])
        cells = [f"{float(rm[m]):5.3f}/{c['sigma'][m]:5.2f}" if m < len(c["loss"]) else " " * 11 for m in marks]
        print(f"{name:22s} {('never' if step is None else str(step)):>9s} {times[name]:6.1f}  " + "  ".join(cells))
    print("cells: running-mean loss per example / sigma at that step")
    if args.plot:
        plot(curves, args.plot)
        print(f"wrote {args.plot}")
    if not all(math.isfinite(v) for c in curves.values() for v in c["loss"]):
        raise SystemExit("a loss was not finite")
    return curves


if __name__ == "__main__":
    main()
