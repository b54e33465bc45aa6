r"""Subnetwork selection (Daxberger et al. 2021 [1]): which weights get a full-covariance posterior.

A *selection* picks :math:`n` weights of a :class:`~pyro_prune.BayesianModel` and returns their **flat indices**
into the concatenation of the model's weight sites in ``model.sites`` order (weights and biases, module order),
each site flattened row-major.  For a network of Linear/Conv layers whose parameters are all Bayesian this is
exactly the order of ``torch.nn.utils.parameters_to_vector(net.parameters())``, the convention of laplace-torch's
``subnetwork_indices``, so indices move freely between the two libraries.

Strategies (each has ``select(model) -> LongTensor`` of sorted, unique indices and ``masks(model)``):

* :class:`LargestMagnitude` — the :math:`n` weights of largest :math:`|w|` at the MAP;
* :class:`LargestVariance` — the :math:`n` weights of largest marginal variance of a trained guide: a diagonal
  Laplace guide (the Wasserstein-pruning rule of [1] §4) or **any guide** with registered marginals
  (e.g. an :class:`~pyro_prune.AutoSparseVD`: no extra curvature pass);
* :class:`Random` — :math:`n` weights uniformly at random (seeded, reproducible);
* :class:`LastLayer` — every weight and bias of the last Bayesian layer;
* :class:`Layers` — every weight and bias of the named layers (modules), e.g. for Kron/diag Laplace on some layers;
* :class:`Mask` — a user ``{site: bool mask}``; :class:`Indices` — user flat indices.

:func:`resolve` turns a strategy, a mask dict or an index tensor into indices; :func:`indices_to_masks` and
:func:`masks_to_indices` convert between the two views.

References

[1] Erik Daxberger, Eric Nalisnick, James Urquhart Allingham, Javier Antorán, José Miguel Hernández-Lobato.
    "Bayesian Deep Learning via Subnetwork Inference", ICML 2021.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch

from ._checks import check_int
from .marginals import marginals as _marginals
from .model import BayesianModel

__all__ = [
    "Selection",
    "LargestMagnitude",
    "LargestVariance",
    "Random",
    "LastLayer",
    "Layers",
    "Mask",
    "Indices",
    "resolve",
    "indices_to_masks",
    "masks_to_indices",
    "num_weights",
    "flatten_sites",
]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _check_model(model: Any) -> BayesianModel:
    if not isinstance(model, BayesianModel):
        raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
    return model


def num_weights(model: BayesianModel) -> int:
    """Number of entries of the flat weight vector (every weight site, biases included)."""
    return sum(info.numel for info in _check_model(model).sites.values())


def flatten_sites(model: BayesianModel, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate ``{site: tensor shaped like the site}`` into the flat vector (``model.sites`` order)."""
    _check_model(model)
    missing = [k for k in model.sites if k not in values]
    if missing:
        raise ValueError(f"no values for weight sites {missing}")
    parts = []
    for k, info in model.sites.items():
        v = torch.as_tensor(values[k])
        if v.shape != info.shape:
            raise ValueError(f"{k!r} has shape {tuple(v.shape)}, the model's site {tuple(info.shape)}")
        parts.append(v.detach().reshape(-1).to(device=model.device))
    return torch.cat(parts)


def indices_to_masks(model: BayesianModel, indices: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``{site: bool mask shaped like the site}`` from flat indices."""
    idx = Indices(indices).select(model)
    flat = torch.zeros(num_weights(model), dtype=torch.bool, device=model.device)
    flat[idx] = True
    out, pos = {}, 0
    for k, info in model.sites.items():
        out[k] = flat[pos : pos + info.numel].reshape(info.shape)
        pos += info.numel
    return out


def masks_to_indices(model: BayesianModel, masks: Mapping[str, Any]) -> torch.Tensor:
    """Sorted flat indices of the ``True`` entries of ``{site: bool mask}`` (missing sites select nothing)."""
    return Mask(masks).select(model)


def _top(scores: torch.Tensor, n: int, model: BayesianModel) -> torch.Tensor:
    total = scores.numel()
    if n > total:
        raise ValueError(f"n = {n} exceeds the number of weights in the model's sites ({total:,})")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("selection scores contain NaN or inf")
    order = torch.argsort(scores.double(), descending=True, stable=True)  # ties: the earlier index wins
    return order[:n].sort().values.to(device=model.device)


def _map_values(model: BayesianModel, source: Any) -> Dict[str, torch.Tensor]:
    if source is None:
        return model.initial_weights()
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, torch.nn.Module) and not callable(getattr(source, "median", None)):
        return dict(source.state_dict())
    median = getattr(source, "median", None)
    if callable(median):
        return dict(median())
    raise TypeError(f"weights must be None, a state_dict, an nn.Module or a guide with median(), got {source!r}")


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------
class Selection:
    """Base class: a rule choosing a subnetwork of a model's weights."""

    def select(self, model: BayesianModel) -> torch.Tensor:
        """Sorted, unique flat indices (``LongTensor``) into the model's weight vector."""
        raise NotImplementedError

    def masks(self, model: BayesianModel) -> Dict[str, torch.Tensor]:
        """The selection as ``{site: bool mask}``."""
        return indices_to_masks(model, self.select(model))

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and not torch.is_tensor(v)
        )
        return f"{type(self).__name__}({args})"


class LargestMagnitude(Selection):
    """The ``n`` weights of largest :math:`|w|`.

    :param n: number of weights, ``1 <= n <=`` the number of weights.
    :param weights: where to read :math:`w`: ``None`` (the network's weights at ``bayesianize`` time, i.e. the MAP
        of a pre-trained network), a ``state_dict``, an ``nn.Module`` or a guide with ``median()``.
    """

    def __init__(self, n: int, weights: Any = None):
        self.n = check_int("n", n, 1)
        self.weights = weights

    def select(self, model: BayesianModel) -> torch.Tensor:
        _check_model(model)
        return _top(flatten_sites(model, _map_values(model, self.weights)).abs(), self.n, model)


class LargestVariance(Selection):
    r"""The ``n`` weights of largest marginal posterior variance, read from a trained guide.

    The variances come from :func:`pyro_prune.marginals.marginals` of ``source`` (any guide with registered
    marginals: a pyro_prune guide, Pyro's ``AutoNormal``...; weights a guide holds as point estimates have variance
    0).  With a diagonal Laplace guide (``pp.laplace_guide(model, data, "diag")``) this is the Wasserstein-pruning
    rule of [1] §4: keeping the largest-variance weights minimizes the 2-Wasserstein distance between the
    full-network and the subnetwork posteriors under a diagonal approximation; with an ``AutoSparseVD`` it needs no
    curvature pass at all.

    :param n: number of weights, ``1 <= n <=`` the number of weights.
    :param source: a trained guide whose marginals are registered.
    :raises TypeError: ``source`` has no registered marginals.
    """

    def __init__(self, n: int, source: Any):
        self.n = check_int("n", n, 1)
        try:
            _marginals(source)
        except (TypeError, ValueError) as e:
            raise TypeError(f"LargestVariance: source must be a trained guide with marginals: {e}") from None
        self.source = source

    def variances(self, model: BayesianModel) -> torch.Tensor:
        """The flat vector of marginal variances used for the ranking."""
        _check_model(model)
        m = _marginals(self.source)
        unknown = [k for k in model.sites if k not in m]
        if unknown:
            raise ValueError(f"LargestVariance: the source guide has no marginals for sites {unknown}")
        return flatten_sites(model, {k: m[k].scale.pow(2) for k in model.sites})

    def select(self, model: BayesianModel) -> torch.Tensor:
        return _top(self.variances(model), self.n, model)


class Random(Selection):
    """``n`` weights drawn uniformly without replacement, reproducibly from ``seed`` (the global RNG is untouched).

    :param n: number of weights, ``1 <= n <=`` the number of weights.
    :param seed: seed of a private ``torch.Generator``.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n = check_int("n", n, 1)
        self.seed = check_int("seed", seed, 0)

    def select(self, model: BayesianModel) -> torch.Tensor:
        total = num_weights(model)
        if self.n > total:
            raise ValueError(f"n = {self.n} exceeds the number of weights in the model's sites ({total:,})")
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randperm(total, generator=gen)[: self.n].sort().values.to(device=model.device)


class LastLayer(Selection):
    """Every weight and bias site of the last Bayesian layer (in module order), as laplace-torch's last-layer."""

    def select(self, model: BayesianModel) -> torch.Tensor:
        _check_model(model)
        layers = [info.module for info in model.sites.values() if info.kind != "other"]
        if not layers:
            raise ValueError("LastLayer: the model has no Bayesian Linear/Conv layer")
        last = layers[-1]
        return Mask({k: torch.ones(info.shape, dtype=torch.bool)
                     for k, info in model.sites.items() if info.module == last}).select(model)  # fmt: skip


class Layers(Selection):
    """Every weight and bias site of the named Bayesian layers (module names as in ``model.sites[...].module``,
    e.g. ``"0"`` and ``"2"`` of an ``nn.Sequential``): a subnet of whole layers, which ``structure="kron"`` and
    ``"diag"`` Laplace posteriors take.

    :param modules: a non-empty sequence of module names.
    """

    def __init__(self, modules: Any):
        if isinstance(modules, str) or not isinstance(modules, (list, tuple)) or not modules:
            raise TypeError(f"Layers needs a non-empty list of module names, got {modules!r}")
        if not all(isinstance(m, str) for m in modules):
            raise TypeError(f"Layers needs module names (str), got {modules!r}")
        self.modules = list(modules)

    def select(self, model: BayesianModel) -> torch.Tensor:
        _check_model(model)
        known = list(dict.fromkeys(info.module for info in model.sites.values() if info.kind != "other"))
        unknown = [m for m in self.modules if m not in known]
        if unknown:
            raise ValueError(f"Layers names unknown layers {unknown}; the model's Bayesian layers are {known}")
        return Mask({k: torch.ones(info.shape, dtype=torch.bool)
                     for k, info in model.sites.items() if info.module in self.modules}).select(model)  # fmt: skip


class Mask(Selection):
    """A user mask ``{site: bool tensor shaped like the site}``; sites left out select nothing."""

    def __init__(self, masks: Mapping[str, Any]):
        if not isinstance(masks, Mapping):
            raise TypeError(f"Mask needs a {{site: bool tensor}} dict, got {type(masks).__name__}")
        self.masks_ = dict(masks)

    def __repr__(self) -> str:
        return f"Mask(sites={list(self.masks_)})"

    def select(self, model: BayesianModel) -> torch.Tensor:
        _check_model(model)
        unknown = [k for k in self.masks_ if k not in model.sites]
        if unknown:
            raise ValueError(f"Mask names unknown sites {unknown}; the model's weight sites are {list(model.sites)}")
        parts = []
        for k, info in model.sites.items():
            m = self.masks_.get(k)
            if m is None:
                parts.append(torch.zeros(info.numel, dtype=torch.bool, device=model.device))
                continue
            m = torch.as_tensor(m)
            if m.dtype != torch.bool or m.shape != info.shape:
                raise ValueError(
                    f"Mask[{k!r}] must be a bool tensor of shape {tuple(info.shape)}, "
                    f"got {m.dtype} of shape {tuple(m.shape)}"
                )
            parts.append(m.reshape(-1).to(model.device))
        idx = torch.cat(parts).nonzero().squeeze(-1)
        if idx.numel() == 0:
            raise ValueError("Mask selects no weights")
        return idx


class Indices(Selection):
    """User flat indices (any order, no duplicates) into the model's weight vector."""

    def __init__(self, indices: Any):
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex() or idx.dim() != 1:
            raise ValueError(f"Indices needs a 1-D integer tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
        if idx.numel() == 0:
            raise ValueError("Indices selects no weights (empty tensor)")
        if idx.unique().numel() != idx.numel():
            raise ValueError("Indices contains duplicates")
        self.indices = idx.long()

    def __repr__(self) -> str:
        return f"Indices(n={self.indices.numel()})"

    def select(self, model: BayesianModel) -> torch.Tensor:
        total = num_weights(model)
        lo, hi = int(self.indices.min()), int(self.indices.max())
        if lo < 0 or hi >= total:
            raise ValueError(f"Indices must lie in [0, {total}) (the number of weights), got range [{lo}, {hi}]")
        return self.indices.sort().values.to(device=model.device)


def as_selection(subnet: Any) -> Selection:
    """A :class:`Selection` from a strategy, a ``{site: bool mask}`` dict or an index tensor / sequence."""
    if isinstance(subnet, Selection):
        return subnet
    if subnet is None:
        raise ValueError("subnet is None: pass a selection (pp.subnet.LargestVariance(n, ...)), a mask or indices")
    if isinstance(subnet, Mapping):
        return Mask(subnet)
    return Indices(subnet)


def resolve(model: BayesianModel, subnet: Any, *, allow_all: Optional[bool] = False) -> torch.Tensor:
    """Sorted flat indices for ``subnet`` (a :class:`Selection`, a mask dict or indices); ``None`` means every
    weight when ``allow_all``."""
    if subnet is None and allow_all:
        return torch.arange(num_weights(model), device=model.device)
    return as_selection(subnet).select(model)
