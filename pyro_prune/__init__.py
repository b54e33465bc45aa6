"""pyro_prune: Bayesian neural networks in Pyro, for pruning and calibrated prediction.

The pipeline, one folder or module a step: ``bayesianize`` (:mod:`pyro_prune.model`) turns a PyTorch network into a
Pyro model; a guide (:mod:`pyro_prune.guides`) is its posterior; ``fit`` (:mod:`pyro_prune.infer`) trains it with
the (Rényi) ELBO; :func:`marginals` (:mod:`pyro_prune.marginals`) summarizes any guide per weight; ``prune``
(:mod:`pyro_prune.pruning`) turns the marginals into a smaller network; ``predict``/``evaluate``
(:mod:`pyro_prune.prediction`) give posterior-predictive ensembles and their scores.
``pyro_prune.plots`` imports matplotlib only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import compare, curvature, data, distributed, distributions, guides, io, metrics, subnet, training
from ._version import __version__  # noqa: F401  (re-exported)
from .curvature import Kron
from .distributions import HalfCauchyScaleMixture, Horseshoe, ImproperLogUniform, LogUniform, LogUniformScaleMixture
from .guides import (
    AutoGroupSparse,
    AutoMeanFieldNormal,
    AutoSparseVD,
    AutoSubnetwork,
    LaplaceGuide,
    LocalReparamGuide,
    laplace_guide,
)
from .guides.laplace import MarglikResult, fit_marglik
from .infer import EarlyStopping, History, fit
from .io import Checkpoint, Saved, load, save
from .marginals import GroupMarginal, Marginal, marginals, register_marginals
from .model import (
    BayesianModel,
    Bernoulli,
    Categorical,
    Gaussian,
    GroupPrior,
    Likelihood,
    SiteInfo,
    WeightsOnly,
    bayesianize,
    group_prior,
    init_from,
    layers,
    likelihoods,
)
from .prediction import Prediction, evaluate, predict
from .pruning import CompressionReport, PruneResult, compact, export, finetune, prune, rules
from .pruning.export import (
    ScriptExport,
    SparseLinear,
    export_program,
    measure_speedup,
    to_sparse,
    to_torch_prune,
    to_torchscript,
)
from .training import NonFiniteError, TrainingState

# ``pp.groups`` is the historical name of the group-prior module.
groups = group_prior


__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "init_from",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "fit",
    "predict",
    "evaluate",
    "History",
    "Prediction",
    "EarlyStopping",
    "NonFiniteError",
    "TrainingState",
    "AutoSparseVD",
    "AutoMeanFieldNormal",
    "AutoSubnetwork",
    "LocalReparamGuide",
    "laplace_guide",
    "LaplaceGuide",
    "fit_marglik",
    "MarglikResult",
    "Kron",
    "curvature",
    "AutoGroupSparse",
    "GroupMarginal",
    "GroupPrior",
    "WeightsOnly",
    "Marginal",
    "marginals",
    "register_marginals",
    "prune",
    "finetune",
    "PruneResult",
    "CompressionReport",
    "LogUniform",
    "ImproperLogUniform",
    "HalfCauchyScaleMixture",
    "Horseshoe",
    "LogUniformScaleMixture",
    "data",
    "distributions",
    "plots",
    "lightning",
    "distributed",
    "guides",
    "layers",
    "likelihoods",
    "metrics",
    "rules",
    "compact",
    "export",
    "to_torch_prune",
    "to_sparse",
    "SparseLinear",
    "measure_speedup",
    "export_program",
    "to_torchscript",
    "ScriptExport",
    "groups",
    "group_prior",
    "subnet",
    "training",
    "io",
    "compare",
    "save",
    "load",
    "Saved",
    "Checkpoint",
]


def __getattr__(name: str) -> Any:
    """Lazy ``pp.plots`` and ``pp.lightning`` (PEP 562): matplotlib and lightning are imported when first asked for."""
    if name in ("plots", "lightning"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
