"""The peers that prune from marginals on the compression–accuracy front (issue 13, point 2): laplace-torch and TyXe.

Run with the peers' interpreter (laplace-torch 0.3 and TyXe live only there)::

    PYTHONPATH=. /work/peers/bin/python bench/front_peers.py            # 10 splits -> bench/results/front_peers.*
    python bench/front.py --merge --reuse bench/results/front.json bench/results/front_peers.json

Same paired protocol and splits as ``bench/front.py`` (``protocol.flat_splits(--data)``, validation carved from
training); every method starts from the same dense network of its split
(``protocol.train_dense_baseline(mlp, split, 100)``, as ``front.py``'s ``dense``; ``front.py --merge`` checks per
split that it is identical). Both peers prune the
*Linear weights* (biases kept, as everywhere on the front) by the marginal signal-to-noise ratio
:math:`|\\mu_i| / \\sigma_i`, globally over the three layers, keeping ``round(n / c)`` of the ``n = 50,200`` weights at
each level ``c`` of ``front.LEVELS``; scored as the pruned *mean* network (as every line of the front), and after
the same 20-epoch masked fine-tune that magnitude pruning gets (``front.masked_finetune``, ``+ft``):

* ``laplace-diag-snr``: ``Laplace(dense, "classification", subset_of_weights="all", hessian_structure="diag")``
  (laplace-torch's default backend, the exact GGN diagonal), fitted on the training part; its scalar prior precision
  :math:`\\lambda` tuned by laplace-torch's own default, ``optimize_prior_precision(method="marglik")`` (Adam on the
  log marginal likelihood, 100 steps). (Its validation grid search, ``method="gridsearch"`` with the GLM-probit NLL on
  the validation split, 21 points from 1e-4 to 1e4, tried once by hand on split 0 in 105 s, chose the grid's upper
  end :math:`\\lambda = 10^4`, marglik 2.30: a posterior so narrow that
  :math:`\\sigma_i \\approx \\lambda^{-1/2}` for almost every weight and the SNR ranking is the magnitude ranking.)
  :math:`\\mu` is the dense network, :math:`\\sigma_i^2 = 1 / (H_{ii} + \\lambda)`.
* ``tyxe-mf-snr``: ``tyxe.VariationalBNN`` with ``IIDPrior(Normal(0, 1))`` on every weight and bias,
  ``tyxe.likelihoods.Categorical(N)``, TyXe's ``AutoNormal`` guide with means initialised from the dense network
  (``PretrainedInitializer.from_net``) and :math:`\\sigma = e^{-5}` (ours' :math:`\\log\\sigma^2 = -10`), trained
  under ``tyxe.poutine.local_reparameterization()`` with ``TraceMeanField_ELBO`` (TyXe's ``fit``), Adam 1e-3, batch
  64, ``--tyxe-epochs`` epochs (default 200, **a third of ours' 600-epoch budget**, no KL warm-up: TyXe's ``fit`` has
  none). TyXe 0.x calls ``pyro.util.deep_getattr``, which Pyro 1.9 no longer has; :class:`AutoNormal` below replaces
  its two getters with ``functools.reduce(getattr, ...)`` and changes nothing else.

Natural threshold (both peers): the Savage–Dickey density ratio of a weight's marginal at zero to its Gaussian prior's
— the per-weight Bayesian model reduction of Friston & Penny (2011), used for BNN pruning by Beckers et al. (2022) —
favours the model with :math:`w_i = 0` exactly when

.. math:: \\frac{\\mu_i^2}{\\sigma_i^2} < \\log \\frac{s_0^2}{\\sigma_i^2},

with :math:`s_0^2` the prior variance (:math:`1/\\lambda` for the Laplace, 1 for TyXe); ``@natural`` prunes those.

Records follow ``bench/protocol.py`` (accuracy, NLL, ECE, per-example correctness, ``val_accuracy``, ``val_nll``);
writes ``bench/results/front_peers.json`` (one checkpoint per split, ``--resume`` continues) and ``front_peers.md``.
``--quick``: 2 splits, a few epochs (smoke, ``front_peers_quick.*``).

[1] K. Friston, W. Penny. Post hoc Bayesian model selection. NeuroImage 56 (2011).
[2] J. Beckers, B. van Erp, Z. Zhao, K. Kondrashov, B. de Vries. Principled pruning of Bayesian neural networks
    through variational free energy minimization. IEEE OJSP (2024), arXiv:2210.09134.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import sys
import time
from importlib.metadata import version

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from bench import common  # noqa: E402

common.hide_bench_folder()  # bench/laplace.py would shadow laplace-torch
import tyxe  # noqa: E402
from laplace import Laplace  # noqa: E402

from bench import front, protocol  # noqa: E402
from bench.common import mlp  # noqa: E402

LINEAR = ("0", "2", "4")  #: the Linear layers of ``mlp()`` by module name


class AutoNormal(tyxe.guides.AutoNormal):
    """TyXe's ``AutoNormal`` with its getters written without ``pyro.util.deep_getattr`` (removed in Pyro 1.9)."""

    def get_loc(self, site_name):
        return functools.reduce(getattr, (site_name + ".loc").split("."), self)

    def get_scale(self, site_name):
        return functools.reduce(getattr, (site_name + ".scale").split("."), self)


# -- pruning from marginals ------------------------------------------------------------------------------------------
def snr_masks(mu, sd, c: float):
    """Masks (one per weight tensor) keeping the ``round(n / c)`` weights of largest :math:`|\\mu| / \\sigma` over all
    of them (``n`` weights in all; ties by position)."""
    snr = torch.cat([(m.abs() / s).flatten() for m, s in zip(mu, sd)])
    keep = torch.zeros_like(snr)
    keep[torch.argsort(snr, descending=True, stable=True)[: round(snr.numel() / c)]] = 1.0
    return [k.view_as(m) for k, m in zip(torch.split(keep, [m.numel() for m in mu]), mu)]


def savage_dickey_masks(mu, sd, prior_var):
    """Masks keeping weight *i* unless the Savage–Dickey ratio favours :math:`w_i = 0`:
    kept iff :math:`\\mu_i^2 / \\sigma_i^2 \\ge \\log(s_0^2 / \\sigma_i^2)`."""
    return [((m / s) ** 2 >= torch.log(torch.as_tensor(prior_var) / s**2)).float() for m, s in zip(mu, sd)]


def mean_net(weights, biases, masks) -> nn.Module:
    """``mlp(in_features)`` holding the masked posterior means (biases unmasked), in eval mode."""
    net = mlp(weights[0].shape[1])
    with torch.no_grad():
        for la, w, b, k in zip(front.linears(net), weights, biases, masks):
            la.weight.copy_(w * k)
            la.bias.copy_(b)
    return net.eval()


def pruned_records(name, weights, biases, sd, prior_var, split, **extra):
    """``{name@<c>x, name+ft@<c>x}`` for every level and the same ``@natural`` (Savage–Dickey) records."""
    n = sum(w.numel() for w in weights)
    named = [(f"@{c}x", snr_masks(weights, sd, c)) for c in front.LEVELS]
    named.append(("@natural", savage_dickey_masks(weights, sd, prior_var)))
    out = {}
    for tag, masks in named:
        comp = n / max(1, int(sum(k.sum() for k in masks)))
        net = mean_net(weights, biases, masks)
        out[name + tag] = front.scored(net, split, comp, **extra)
        out[name + "+ft" + tag] = front.scored(front.masked_finetune(net, masks, split), split, comp, **extra)
    return out


# -- the peers -------------------------------------------------------------------------------------------------------
def laplace_method(args):
    def run(split, cache):
        dense = cache["dense"]
        la = Laplace(copy.deepcopy(dense), "classification", subset_of_weights="all", hessian_structure="diag")
        la.fit(split.loader(seed=7))
        la.optimize_prior_precision(pred_type="glm", method="marglik")  # laplace-torch's default tuning
        lam = float(la.prior_precision)
        shapes = [p.shape for p in dense.parameters()]
        mean = [t.view(s) for t, s in zip(torch.split(la.mean.detach(), [s.numel() for s in shapes]), shapes)]
        var = torch.split(la.posterior_variance.detach(), [s.numel() for s in shapes])
        sd = [v.sqrt().view(s) for v, s in zip(var, shapes)]
        print(f"split {split.index} laplace: prior precision {lam:.4g} (marglik)", flush=True)
        return pruned_records("laplace-diag-snr", mean[0::2], mean[1::2], sd[0::2], 1.0 / lam, split,
                              prior_precision=lam)  # fmt: skip

    return run


def tyxe_method(args):
    def run(split, cache):
        pyro.clear_param_store()
        pyro.set_rng_seed(50_000 + split.index)
        net = copy.deepcopy(cache["dense"])
        guide = functools.partial(
            AutoNormal, init_loc_fn=tyxe.guides.PretrainedInitializer.from_net(net), init_scale=math.exp(-5.0)
        )
        prior = tyxe.priors.IIDPrior(dist.Normal(torch.tensor(0.0), torch.tensor(1.0)))
        bnn = tyxe.VariationalBNN(net, prior, tyxe.likelihoods.Categorical(split.dataset_size), guide)
        t0 = time.perf_counter()

        def progress(_bnn, epoch, elbo):
            if (epoch + 1) % 50 == 0 or epoch + 1 == args.tyxe_epochs:
                print(f"split {split.index} tyxe: epoch {epoch + 1}/{args.tyxe_epochs}, loss {elbo:.0f}, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip

        with tyxe.poutine.local_reparameterization():
            bnn.fit(split.loader(seed=8), pyro.optim.Adam({"lr": args.lr}), args.tyxe_epochs, callback=progress)
        g = bnn.net_guide
        with torch.no_grad():
            weights = [g.get_loc(f"net.{i}.weight").detach().clone() for i in LINEAR]
            biases = [g.get_loc(f"net.{i}.bias").detach().clone() for i in LINEAR]
            sd = [g.get_scale(f"net.{i}.weight").detach().clone() for i in LINEAR]
        return pruned_records("tyxe-mf-snr", weights, biases, sd, 1.0, split, epochs=args.tyxe_epochs)

    return run


def dense_method(args):
    """``front.py``'s ``dense`` (without the equal-budget line): the network every peer starts from."""

    make_net = protocol.net_factory(args.data)

    def run(split, cache):
        cache["dense"] = dense = protocol.train_dense_baseline(make_net, split, args.dense_epochs)
        return {"dense": front.scored(dense, split, 1.0, epochs=args.dense_epochs)}

    return run


# -- report ----------------------------------------------------------------------------------------------------------
def markdown(data) -> str:
    res = protocol.by_label(data["splits"])
    k = len(res["dense"])
    secs = data["seconds"]
    per = {m: sum(s.get(m, 0.0) for s in secs) / 60 for m in ("dense", "laplace", "tyxe")}
    lines = [f"# Peers pruning from marginals ({k} paired {data['meta'].get('data', 'digits')} splits)", "",
             "Generated by `PYTHONPATH=. /work/peers/bin/python bench/front_peers.py` (see its docstring); mean ± sd; "
             "Δ vs dense with the paired 95 % t CI. The whole front, with ours: `front.md`.", "",
             f"Run: {data['meta']}; method time " + ", ".join(f"{m} {v:.1f} min" for m, v in per.items()) + ".",
             ""]  # fmt: skip
    for tag in [f"@{c}x" for c in front.LEVELS] + ["@natural"]:
        labels = ["dense", *(lab for lab in res if lab.endswith(tag) and lab != "dense")]
        lines += [f"## {tag[1:]}", "", protocol.comparison(res, labels, "dense").to_markdown(["accuracy", "nll"]), ""]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits", choices=sorted(protocol.DATASETS))
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--dense-epochs", type=int, default=100)
    ap.add_argument("--tyxe-epochs", type=int, default=200, help="TyXe mean-field VI epochs (ours: 600)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", nargs="*", default=[], choices=["laplace", "tyxe"])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 splits, few epochs")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", default=None, help="results/front_peers (digits), results/front_peers_<data> otherwise")
    args = ap.parse_args(argv)
    if args.out is None:
        stem = "front_peers" if args.data == "digits" else f"front_peers_{args.data}"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", stem)
    if args.quick:
        args.splits, args.dense_epochs, args.tyxe_epochs = 2, 5, 3
        args.out += "_quick"
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.report_only:
        methods = {"dense": dense_method(args), "laplace": laplace_method(args), "tyxe": tyxe_method(args)}
        methods = {k: v for k, v in methods.items() if k not in args.skip}
        meta = {k: v for k, v in vars(args).items() if k not in ("resume", "report_only", "out")}
        meta.update(torch=torch.__version__, pyro=pyro.__version__, laplace_torch=version("laplace-torch"),
                    tyxe=version("tyxe"), levels=list(front.LEVELS), stamp=common.run_stamp())  # fmt: skip
        t = time.perf_counter()
        splits = protocol.flat_splits(args.data, args.splits)
        data = protocol.run(splits, methods, args.out + ".json", meta, args.resume)
        print(f"front_peers: {len(data['splits'])} splits in {time.perf_counter() - t:.0f} s", flush=True)
    text = markdown(protocol.load_checkpoint(args.out + ".json"))
    with open(args.out + ".md", "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
