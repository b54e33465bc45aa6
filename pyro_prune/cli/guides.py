"""The posterior families of ``--guide``: prior, guide, training, and the thresholds tried when pruning.

=====================  ====================================================================================
``normal``             Gaussian prior :math:`\\mathcal N(0, s^2)` (``--prior-scale``), mean-field Gaussian
                       :class:`~pyro_prune.AutoMeanFieldNormal` started at the pre-trained weights
``sparse-vd``          log-uniform prior on weights, :class:`~pyro_prune.AutoSparseVD` (Molchanov et al. 2017)
``group-log-uniform``  :class:`~pyro_prune.GroupPrior` ``"log-uniform"`` + :class:`~pyro_prune.AutoGroupSparse`
``group-horseshoe``    :class:`~pyro_prune.GroupPrior` ``"horseshoe"`` + :class:`~pyro_prune.AutoGroupSparse`
``laplace-kron``       :func:`~pyro_prune.laplace_guide` at the pre-trained (MAP) network, KFAC curvature
``laplace-diag``       the same with a diagonal GGN
``laplace-full``       the same with the full GGN (``P^2`` memory: small networks)
``laplace-last-layer`` KFAC over the last layer only
``subnetwork``         :class:`~pyro_prune.AutoSubnetwork` over the ``--subnet-size`` largest-magnitude weights
=====================  ====================================================================================

Laplace guides are not trained further (``--epochs`` is not used); their prior precision :math:`\\tau` is chosen on
the validation split (``val``), by the marginal likelihood (``marglik``) or given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

from ..distributions import LogUniform
from ..guides import AutoGroupSparse, AutoMeanFieldNormal, AutoSparseVD, AutoSubnetwork, laplace_guide
from ..infer import fit
from ..model import Categorical, Gaussian, GroupPrior, bayesianize, init_from
from ..pruning import rules
from ..subnet import LargestMagnitude, LastLayer
from ..training import EarlyStopping

__all__ = ["GUIDES", "Posterior", "build_posterior", "candidate_rules", "fixed_rule"]

#: ``--guide`` names and one line each.
GUIDES: Dict[str, str] = {
    "normal": "mean-field Gaussian, Gaussian prior",
    "sparse-vd": "sparse variational dropout, log-uniform prior",
    "group-log-uniform": "Bayesian compression, log-uniform group scales",
    "group-horseshoe": "Bayesian compression, horseshoe group scales",
    "laplace-kron": "Laplace at the MAP, KFAC",
    "laplace-diag": "Laplace at the MAP, diagonal GGN",
    "laplace-full": "Laplace at the MAP, full GGN",
    "laplace-last-layer": "Laplace at the MAP, KFAC over the last layer",
    "subnetwork": "full-covariance Gaussian over the largest-magnitude weights",
}

#: fractions of weights removed, tried for guides without a sparsity prior (SNR ranking).
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


@dataclass
class Posterior:
    """A fitted model and guide, with what it took."""

    model: Any
    guide: Any
    name: str
    history: Any = None
    seconds: float = 0.0
    settings: Dict[str, Any] = field(default_factory=dict)


def _prior(name: str, prior_scale: float) -> Any:
    if name.startswith("group-"):
        return GroupPrior(name[len("group-") :])
    if name == "sparse-vd":
        return lambda site, module, param: LogUniform() if site.endswith("weight") else None
    return dist.Normal(0.0, prior_scale)


def _likelihood(dataset, noise: Optional[float]) -> Any:
    n = len(dataset.y["train"])
    return Categorical(n) if dataset.task == "classification" else Gaussian(n, scale=noise)


def _laplace(model: Any, name: str, train: Any, val: Any, tau: Union[str, float]) -> Any:
    structure = {"laplace-kron": "kron", "laplace-diag": "diag", "laplace-full": "full"}.get(name, "kron")
    subnet = LastLayer() if name == "laplace-last-layer" else None
    guide = laplace_guide(
        model, train, structure=structure, subnet=subnet, prior_precision=tau if isinstance(tau, float) else 1.0
    )
    if tau == "val":
        guide.optimize_prior_precision(method="val", val_data=val)
    elif tau == "marglik":
        guide.optimize_prior_precision(method="marglik")
    return guide


def _svi_guide(model: Any, name: str, net: nn.Module, args: Any) -> Any:
    if name == "normal":
        return AutoMeanFieldNormal(model, init_loc_fn=init_from(net), init_scale=1e-3)
    if name == "sparse-vd":
        return AutoSparseVD(model)
    if name.startswith("group-"):
        return AutoGroupSparse(model)
    size = min(args.subnet_size, sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight")))
    return AutoSubnetwork(model, LargestMagnitude(size))


def build_posterior(name: str, net: nn.Module, dataset: Any, loaders: Dict[str, Any], args: Any, noise=None):
    """Bayesianize ``net`` with ``name``'s prior and fit its guide (a Laplace guide at ``net`` as the MAP).

    :param loaders: ``{"train": loader, "val": (x, y)}``.
    :param noise: the Gaussian noise std for regression (from the pre-trained network's residuals).
    :returns: a :class:`Posterior`.
    """
    model = bayesianize(net, prior=_prior(name, args.prior_scale), likelihood=_likelihood(dataset, noise))
    t0 = time.perf_counter()
    if name.startswith("laplace-"):
        guide = _laplace(model, name, loaders["train"], loaders["val"], args.prior_precision)
        tau = guide.prior_precision
        settings = {"prior_precision": tau.tolist() if torch.is_tensor(tau) else tau, "tau_rule": args.prior_precision}
        return Posterior(model, guide, name, None, time.perf_counter() - t0, settings)
    guide = _svi_guide(model, name, net, args)
    sparse = name == "sparse-vd" or name.startswith("group-")
    warmup = args.kl_warmup if args.kl_warmup >= 0 else (args.epochs // 6 if sparse else 0)
    stop = [EarlyStopping("val_nll", patience=args.patience)] if args.patience else []
    pyro.clear_param_store()
    history = fit(
        model,
        guide,
        loaders["train"],
        epochs=args.epochs,
        lr=args.lr,
        kl_warmup=warmup,
        val_data=[loaders["val"]] if stop else None,
        callbacks=stop,
        progress=not args.no_progress,
    )
    settings = {"epochs": args.epochs, "kl_warmup": warmup, "lr": args.lr, "patience": args.patience}
    return Posterior(model, guide, name, history, time.perf_counter() - t0, settings)


def candidate_rules(name: str) -> List[Any]:
    """The rules tried on the validation split (the selection takes the most compression that qualifies): for the
    group guides, the prior's default ``GroupLogAlpha()`` (``rules.GROUP_DEFAULTS``) and a sweep of pooled thresholds
    around ``rules.GROUP_THRESHOLDS``; for sparse VD a log α sweep; else sparsity levels."""
    if name == "sparse-vd":
        return [rules.LogAlpha(t) for t in (8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0)]
    if name.startswith("group-"):
        t0 = rules.GROUP_THRESHOLDS[name[len("group-") :]]  # the prior's default criterion, then a pooled sweep
        sweep = [rules.GroupLogAlpha(t0 + d) for d in (4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0)]
        return [rules.GroupLogAlpha(), *sweep]
    return [rules.Sparsity(s) for s in SPARSITIES]


def fixed_rule(name: str, value: float) -> Any:
    """The rule ``--threshold value`` means for ``name``.

    :raises ValueError: a fraction outside ``[0, 1)`` for a guide pruned by sparsity.
    """
    if name == "sparse-vd":
        return rules.LogAlpha(value)
    if name.startswith("group-"):
        return rules.GroupLogAlpha(value)
    if not 0 <= value < 1:
        raise ValueError(f"for --guide {name} the threshold is the fraction of weights removed, in [0, 1): {value}")
    return rules.Sparsity(value)
