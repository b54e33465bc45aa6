r"""The Laplace posterior over a model's weight sites, one class per kind of structure, chosen once by name.

A :class:`WeightPosterior` holds the posterior precisions (:class:`~pyro_prune.curvature.Precision`) of the weights
and everything the guide needs from them, so :class:`~pyro_prune.guides.laplace.LaplaceGuide` never asks which
structure it has:

* :class:`LayerwisePosterior` (``"kron"``, ``"diag"``): one :class:`~pyro_prune.curvature.LayerPrecision` per
  layer over its ``(out, in')`` matrix ``[W | b]``, from one KFAC pass (:func:`~pyro_prune.curvature.kfac`);
* :class:`FullPosterior` (``"full"``): one :class:`~pyro_prune.curvature.Dense` precision over all weights or a
  subnetwork [1] (the others fixed at the MAP), from the dense GGN (:func:`~pyro_prune.curvature.full_ggn`);
* :class:`LowRankPosterior` (``"lowrank"``): one :class:`~pyro_prune.curvature.LowRank` precision (the GGN's top
  ``rank`` eigenpairs plus the prior) over the same weights, from GGN–matrix products
  (:func:`~pyro_prune.curvature.ggn_eigh`), without the dense GGN.

:data:`STRUCTURES` maps a ``structure`` name to its builder; a new structure adds one class and one entry.

With per-layer prior precisions :math:`\tau_l`, the GLM predictive covariance :math:`J P^{-1} J^\top` of each kind
is computed in :mod:`~pyro_prune.guides.laplace.glm`'s terms (module docstring there): the blockwise kinds from
layer Jacobians projected into each precision's eigenbasis, the full kind by whitening the parameter Jacobian with
the Cholesky factor of :math:`P`.

References

[1] Erik Daxberger et al. "Bayesian Deep Learning via Subnetwork Inference", ICML 2021.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ... import curvature as cv
from ...curvature.precision import TensorFn
from ...distributed import all_reduce_curvature, all_reduce_sums
from ...model import BayesianModel
from ...model.likelihoods import Fisher, Likelihood
from .layer_view import Layer, subnet_masks, whole_layers

__all__ = ["WeightPosterior", "LayerwisePosterior", "FullPosterior", "LowRankPosterior", "STRUCTURES", "make_posterior"]

Latent = Tuple[str, Tuple[int, ...]]


def layer_taus(tau: torch.Tensor, num_layers: int) -> List[torch.Tensor]:
    """A scalar :math:`\\tau` repeated, or the entries of a per-layer one."""
    return [tau if tau.dim() == 0 else tau[i] for i in range(num_layers)]


class WeightPosterior(abc.ABC):
    r"""The Laplace posterior precision :math:`P = s\,C + \tau` over a model's weight sites.

    :param layers: the model's layers (:func:`~pyro_prune.guides.laplace.layer_view.make_layers`).
    :param map_values: ``{site: MAP value}``.
    :ivar precisions: ``{key: Precision}`` (layer names, or ``"full"``).
    """

    def __init__(self, layers: Sequence[Layer], map_values: Mapping[str, torch.Tensor]):
        self.layers = list(layers)
        self.map = dict(map_values)
        self.precisions: Dict[str, cv.Precision] = {}

    # -- state (state_dict, .to()) -------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """``{"precisions": {key: Precision.state()}}`` (subclasses add what else they hold)."""
        return {"precisions": {k: p.state() for k, p in self.precisions.items()}}

    def load_state(self, state: Mapping[str, Any], map_values: Mapping[str, torch.Tensor], fn: TensorFn) -> None:
        """Take the precisions of ``state`` (each tensor through ``fn``) and the MAP ``map_values``."""
        precisions = state.get("precisions")
        if not isinstance(precisions, Mapping) or set(precisions) != set(self._precision_keys()):
            got = sorted(precisions) if isinstance(precisions, Mapping) else precisions
            raise ValueError(f"the Laplace state holds precisions {got}; this guide needs {self._precision_keys()}")
        self.precisions = {k: cv.precision_from_state(precisions[k]).apply(fn) for k in self._precision_keys()}
        self.map = dict(map_values)

    def apply(self, fn: TensorFn, map_values: Mapping[str, torch.Tensor]) -> None:
        """Apply ``fn`` to every tensor (``nn.Module._apply``); ``map_values`` is the MAP after it."""
        self.precisions = {k: p.apply(fn) for k, p in self.precisions.items()}
        self.map = dict(map_values)

    @abc.abstractmethod
    def _precision_keys(self) -> List[str]:
        """The keys of :attr:`precisions` once fitted."""

    @abc.abstractmethod
    def fit(self, net: nn.Module, data: Iterable, likelihood: Likelihood, scale: float, fisher: Fisher) -> tuple:
        """Compute the curvature of ``net`` (at the MAP) over ``data``; returns ``(examples seen, log-lik sum)``."""

    @abc.abstractmethod
    def set_prior(self, tau: torch.Tensor) -> None:
        """Set :math:`\\tau` (scalar or per layer) in every precision."""

    @abc.abstractmethod
    def logdet(self, tau: torch.Tensor, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        r""":math:`\log\det(c\,s\,C + \tau)` at ``tau`` (scalar or per layer) from the eigenvalues of the curvature
        computed once per fit (:math:`O(P)` per call for kron/diag and full with a scalar :math:`\tau`),
        differentiable in ``tau`` and ``curvature_scale``.

        :param curvature_scale: :math:`c`, a scalar tensor multiplying the curvature (``None``: 1), e.g.
            :math:`\sigma_0^2/\sigma^2` for a Gaussian likelihood's noise.
        """

    @abc.abstractmethod
    def layer_sizes(self) -> List[int]:
        """The number of weights the posterior covers in each layer."""

    @abc.abstractmethod
    def layer_sq_norms(self) -> List[torch.Tensor]:
        """:math:`\\|w^*_l\\|^2` over the covered weights of each layer."""

    @abc.abstractmethod
    def latents(self) -> List[Latent]:
        """``[(site suffix, shape)]`` of the standard normal auxiliary sites one joint draw needs."""

    @abc.abstractmethod
    def draw(self, eps: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``{site: value}`` from standard normal ``eps`` (one per :meth:`latents`, leading batch dimensions)."""

    @abc.abstractmethod
    def marginal_variances(self) -> Dict[str, torch.Tensor]:
        """``{site: marginal variance}`` (0 for weights the posterior does not cover)."""

    @abc.abstractmethod
    def glm_features(self, net: nn.Module, likelihood: Likelihood, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Outputs ``f`` ``(B, K)`` and the prior-independent Jacobian features of ``x``."""

    @abc.abstractmethod
    def glm_covariance(self, f: torch.Tensor, feats: Any) -> torch.Tensor:
        """:math:`J P^{-1} J^\\top` ``(B, K, K)`` from :meth:`glm_features` at the current :math:`\\tau`."""


# -------------------------------------------------------------------------------------------------------------
# kron / diag: one precision per layer
# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerStructure:
    """What a layerwise structure takes from the KFAC pass, and how it builds a layer's precision."""

    factors: bool
    diagonal: bool
    build: Callable[[cv.LayerFactors, float], cv.LayerPrecision]


def _build_kron(f: cv.LayerFactors, scale: float) -> cv.LayerPrecision:
    return cv.Kron.from_factors(f.A, f.G, scale)


def _build_diag(f: cv.LayerFactors, scale: float) -> cv.LayerPrecision:
    return cv.Diag(f.diag, scale)


KRON = LayerStructure(True, False, _build_kron)  # named functions, not lambdas: a guide pickles
DIAG = LayerStructure(False, True, _build_diag)


class LayerwisePosterior(WeightPosterior):
    """A block-diagonal posterior, one :class:`~pyro_prune.curvature.LayerPrecision` per layer (kron, diag), over
    every layer or the whole layers named in ``selected`` (the weights of the others stay Deltas at the MAP, as in
    a subnetwork posterior [1]).

    :param selected: module names of the covered layers (default: all); the per-layer prior precision still has
        one entry per layer of the model (those of uncovered layers are unused).
    """

    def __init__(self, layers: Sequence[Layer], map_values: Mapping[str, torch.Tensor], kind: LayerStructure,
                 selected: Optional[Sequence[str]] = None):  # fmt: skip
        super().__init__(layers, map_values)
        self.kind = kind
        self._select(selected)

    def _select(self, selected: Optional[Sequence[str]]) -> None:
        names = [layer.module for layer in self.layers]
        chosen = names if selected is None else list(selected)
        unknown = [n for n in chosen if n not in names]
        if unknown or not chosen:
            raise ValueError(f"the Laplace posterior's layers {chosen} must be a non-empty subset of {names}")
        self.selected = [n for n in names if n in chosen]

    @property
    def covered(self) -> List[Layer]:
        """The layers the posterior covers, in model order."""
        return [layer for layer in self.layers if layer.module in self.selected]

    def _precision_keys(self) -> List[str]:
        return list(self.selected)

    def state(self) -> Dict[str, Any]:
        """The precisions and the covered layers, ``{"layers": [module name]}``."""
        return {**super().state(), "layers": list(self.selected)}

    def load_state(self, state, map_values, fn) -> None:
        layers = state.get("layers", [layer.module for layer in self.layers])  # older files: every layer
        if not isinstance(layers, Sequence) or isinstance(layers, str):
            raise ValueError(f"the Laplace state's 'layers' must be a list of module names, got {layers!r}")
        self._select(layers)
        super().load_state(state, map_values, fn)

    def _biases(self) -> Dict[str, bool]:
        return {layer.module: layer.bias is not None for layer in self.covered}

    def fit(self, net, data, likelihood, scale, fisher) -> tuple:
        res = cv.kfac(net, data, likelihood, self._biases(), fisher=fisher, factors=self.kind.factors,
                      diagonal=self.kind.diagonal)  # fmt: skip
        res = all_reduce_curvature(res)  # data parallel: the union of the workers' shards (else the identity)
        for layer in self.covered:
            self.precisions[layer.module] = self.kind.build(res.layers[layer.module], scale)
        return res.num_examples, res.log_likelihood

    def _covered_taus(self, tau: torch.Tensor) -> List[Tuple[Layer, torch.Tensor]]:
        pairs = zip(self.layers, layer_taus(tau, len(self.layers)))
        return [(layer, t) for layer, t in pairs if layer.module in self.selected]

    def set_prior(self, tau: torch.Tensor) -> None:
        for layer, t in self._covered_taus(tau):
            self.precisions[layer.module] = self.precisions[layer.module].with_prior(t)

    def logdet(self, tau: torch.Tensor, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        parts = [self.precisions[layer.module].with_prior(t).logdet(curvature_scale)
                 for layer, t in self._covered_taus(tau)]  # fmt: skip
        return torch.stack(parts).sum()

    def layer_sizes(self) -> List[int]:
        return [layer.numel if layer.module in self.selected else 0 for layer in self.layers]

    def layer_sq_norms(self) -> List[torch.Tensor]:
        zero = torch.zeros(
            (), dtype=self.map[self.layers[0].weight].dtype, device=self.map[self.layers[0].weight].device
        )
        return [layer.join(self.map).pow(2).sum() if layer.module in self.selected else zero for layer in self.layers]

    def latents(self) -> List[Latent]:
        return [(f"_{i}", (layer.out, layer.cols)) for i, layer in enumerate(self.layers)
                if layer.module in self.selected]  # fmt: skip

    def draw(self, eps: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        values: Dict[str, torch.Tensor] = dict(self.map)  # uncovered layers: the MAP
        for layer, e in zip(self.covered, eps):
            noise = self.precisions[layer.module].transform(e)
            values.update(layer.split(layer.join(self.map) + noise))
        return values

    def marginal_variances(self) -> Dict[str, torch.Tensor]:
        var = {k: torch.zeros_like(v) for k, v in self.map.items()}
        for layer in self.covered:
            var.update(layer.split(self.precisions[layer.module].marginal_variance()))
        return var

    def glm_features(self, net, likelihood, x) -> Tuple[torch.Tensor, Dict[str, tuple]]:
        """Per layer, inputs and output Jacobians in the precision's eigenbasis: ``(a², J_s, None)`` for one
        position, ``(None, None, M)`` with :math:`M = \\sum_t J_{s,t} \\otimes a_t` otherwise."""
        f, per = cv.output_jacobians(net, x, likelihood, self._biases())
        feats = {}
        for name, (a, Js) in per.items():  # (B, T, in'), (K, B, T, out)
            a, Js = self.precisions[name].project(a, Js)
            if a.shape[1] == 1:
                feats[name] = (a[:, 0].pow(2), Js[:, :, 0], None)
            else:
                feats[name] = (None, None, torch.einsum("kbto,bti->kboi", Js, a))
        return f, feats

    def glm_covariance(self, f, feats) -> torch.Tensor:
        K = f.shape[-1]
        cov = torch.zeros(f.shape[0], K, K, dtype=f.dtype, device=f.device)
        for name, (a2, Js, M) in feats.items():
            inv = self.precisions[name].eigenvalues().reciprocal()  # (out, in')
            if M is None:
                cov += torch.einsum("kbo,lbo,bo->bkl", Js, Js, a2 @ inv.T)
            else:
                cov += torch.einsum("kboi,lboi,oi->bkl", M, M, inv)
        return cov


# -------------------------------------------------------------------------------------------------------------
# full: one dense precision over all weights or a subnetwork
# -------------------------------------------------------------------------------------------------------------
class FullPosterior(WeightPosterior):
    """A dense precision over the weights selected by ``masks`` (``{site: flat bool mask}``, model site order).

    :meth:`fit` eigendecomposes the GGN once (``eigvalsh``, :math:`O(P^3)`, kept in the state): the log evidence at
    a scalar :math:`\tau` (or a per-layer one over a subnet inside one layer) then costs :math:`O(P)`; a per-layer
    :math:`\tau` over several layers takes a Cholesky factorization per value."""

    def __init__(self, layers, map_values, masks: Mapping[str, torch.Tensor], max_memory: float):
        super().__init__(layers, map_values)
        self.sites = {k: m for k, m in masks.items() if bool(m.any())}
        self.max_memory = max_memory

    #: the key of the one precision in :attr:`precisions`.
    key = "full"

    def _precision_keys(self) -> List[str]:
        return [self.key]

    def state(self) -> Dict[str, Any]:
        """The dense precision and the subnetwork, ``{"sites": {site: flat bool mask}}``."""
        return {**super().state(), "sites": dict(self.sites)}

    def load_state(self, state, map_values, fn) -> None:
        sites = state.get("sites")
        if not isinstance(sites, Mapping) or any(k not in self.map for k in sites):
            raise ValueError(f"the Laplace state's subnetwork names sites outside the model's {list(self.map)}")
        self.sites = {k: fn(m) for k, m in sites.items()}
        super().load_state(state, map_values, fn)

    def apply(self, fn, map_values) -> None:
        self.sites = {k: fn(m) for k, m in self.sites.items()}
        super().apply(fn, map_values)

    @property
    def numel(self) -> int:
        return int(sum(int(m.sum()) for m in self.sites.values()))

    def _check_memory(self, dtype: torch.dtype) -> None:
        n, need = self.numel, cv.dense_bytes(self.numel, dtype)
        if need > self.max_memory:
            raise MemoryError(
                f"structure='full' over {n:,} parameters needs about {need:,} bytes ({need / 2**30:.2f} GiB) for "
                f"its dense matrices, above max_memory={int(self.max_memory):,} bytes; use structure='kron' or "
                "'diag', or a subnet=... of fewer weights (or raise max_memory)"
            )

    def fit(self, net, data, likelihood, scale, fisher) -> tuple:
        self._check_memory(next(iter(self.map.values())).dtype)
        ggn, seen, loglik = cv.full_ggn(net, data, likelihood, self.sites, fisher=fisher)
        ggn, seen, loglik = all_reduce_sums(ggn, seen, loglik)  # data parallel: the union of the shards
        self.precisions[self.key] = cv.Dense(ggn / seen, scale)
        self.precisions[self.key].curvature_eigenvalues()  # once per fit: the evidence then costs O(P) per tau
        return seen, loglik

    def _layer_sites(self, layer: Layer) -> List[str]:
        return [s for s in (layer.weight, layer.bias) if s is not None and s in self.sites]

    def _prior_vector(self, tau: torch.Tensor) -> torch.Tensor:
        """:math:`\\tau` over the covered weights: a scalar when one value covers them all (a scalar :math:`\\tau`
        or a subnet inside one layer: the logdet then uses the cached eigenvalues), else a vector."""
        if tau.dim() == 0:
            return tau
        pairs = [(layer, t) for layer, t in zip(self.layers, layer_taus(tau, len(self.layers)))
                 if self._layer_sites(layer)]  # fmt: skip
        if len(pairs) == 1:
            return pairs[0][1]
        return torch.cat([t.expand(int(self.sites[s].sum())) for layer, t in pairs for s in self._layer_sites(layer)])

    def set_prior(self, tau: torch.Tensor) -> None:
        self.precisions[self.key] = self.precisions[self.key].with_prior(self._prior_vector(tau))

    def logdet(self, tau: torch.Tensor, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.precisions[self.key].with_prior(self._prior_vector(tau)).logdet(curvature_scale)

    def layer_sizes(self) -> List[int]:
        return [sum(int(self.sites[s].sum()) for s in self._layer_sites(layer)) for layer in self.layers]

    def layer_sq_norms(self) -> List[torch.Tensor]:
        ref = next(iter(self.map.values()))
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        return [
            sum((self.map[s].reshape(-1)[self.sites[s]].pow(2).sum() for s in self._layer_sites(layer)), zero)
            for layer in self.layers
        ]

    def latents(self) -> List[Latent]:
        return [("", (self.numel,))]

    def _scatter(self, flat_values: torch.Tensor, fill: Optional[Mapping[str, torch.Tensor]]) -> Dict[str, Any]:
        """Split ``(..., numel)`` over the selected entries of each site; other entries from ``fill`` (or 0)."""
        batch, pos, out = flat_values.shape[:-1], 0, {}
        for site, value in self.map.items():
            base = value if fill is not None else torch.zeros_like(value)
            mask = self.sites.get(site)
            if mask is None:
                out[site] = base
                continue
            k = int(mask.sum())
            flat = base.reshape(-1).expand(batch + (value.numel(),)).clone()
            flat[..., mask] = flat[..., mask] + flat_values[..., pos : pos + k]
            pos += k
            out[site] = flat.reshape(batch + value.shape)
        return out

    def draw(self, eps: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self._scatter(self.precisions[self.key].transform(eps[0]), self.map)

    def marginal_variances(self) -> Dict[str, torch.Tensor]:
        return self._scatter(self.precisions[self.key].marginal_variance(), None)

    def glm_features(self, net, likelihood, x) -> Tuple[torch.Tensor, torch.Tensor]:
        """Outputs and the parameter Jacobian ``(B, K, P)`` over the selected entries."""
        return cv.param_jacobians(net, x, likelihood, self.sites)

    def glm_covariance(self, f, feats) -> torch.Tensor:
        B, K, P = feats.shape
        X = self.precisions[self.key].whiten(feats.reshape(B * K, P)).reshape(P, B, K)
        return torch.einsum("pbk,pbl->bkl", X, X)


# -------------------------------------------------------------------------------------------------------------
# lowrank: the top-k eigenpairs of the GGN over all weights or a subnetwork
# -------------------------------------------------------------------------------------------------------------
class LowRankPosterior(FullPosterior):
    r"""A :class:`~pyro_prune.curvature.LowRank` precision :math:`s\,U\mathrm{diag}(\lambda)U^\top + \tau` over the
    weights ``masks`` selects, with :math:`(U, \lambda)` the top-``rank`` eigenpairs of the mean GGN found by
    randomized subspace iteration on GGN–matrix products (:func:`~pyro_prune.curvature.ggn_eigh`): neither the GGN
    nor the data set's Jacobian is formed, the precision holds :math:`O(P k)` numbers, and the evidence costs
    :math:`O(k)` per scalar :math:`\tau`.

    :param rank: :math:`k`, an int in ``[1, P]``.
    :param solver: the eigensolver's settings (:class:`~pyro_prune.curvature.Eigensolver`).
    """

    key = "lowrank"

    def __init__(self, layers, map_values, masks, max_memory: float, rank: Any, solver: cv.Eigensolver):
        super().__init__(layers, map_values, masks, max_memory)
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an int (the number of GGN eigenpairs), got {rank!r}")
        if not 1 <= rank <= self.numel:
            raise ValueError(f"rank must lie in [1, {self.numel}] (the weights the posterior covers), got {rank}")
        if not isinstance(solver, cv.Eigensolver):
            raise TypeError(f"eigensolver must be a pyro_prune.curvature.Eigensolver, got {type(solver).__name__}")
        self.rank, self.solver = rank, solver

    def _check_memory(self, dtype: torch.dtype) -> None:
        need = cv.lowrank_bytes(self.numel, self.rank, dtype, self.solver.oversample)
        if need > self.max_memory:
            raise MemoryError(
                f"structure='lowrank' with rank={self.rank} over {self.numel:,} parameters needs about {need:,} bytes, "
                f"above max_memory={int(self.max_memory):,} bytes; lower the rank (or raise max_memory)"
            )

    def fit(self, net, data, likelihood, scale, fisher) -> tuple:
        self._check_memory(next(iter(self.map.values())).dtype)
        # data parallel: every GGN product summed over the workers' shards (the random start is seeded, so the
        # same on every worker); without a process group all_reduce_sums is the identity
        op = cv.GGNOperator(net, data, likelihood, self.sites, fisher, self.solver.seed, self.solver.chunk,
                            reduce=all_reduce_sums)  # fmt: skip
        eig, vecs = cv.ggn_eigh(op, self.rank, self.solver)
        self.precisions[self.key] = cv.LowRank(eig, vecs, scale)
        return op.num_examples, op.log_likelihood

    def load_state(self, state, map_values, fn) -> None:
        super().load_state(state, map_values, fn)
        got = getattr(self.precisions[self.key], "rank", None)
        if got != self.rank:
            raise ValueError(f"the state_dict holds a rank-{got} low-rank posterior; this guide has rank={self.rank}")

    def glm_features(self, net, likelihood, x) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Outputs and, per covered site, :math:`J_s J_s^\top` ``(S, B, K, K)`` and :math:`J_s U_s` ``(S, B, K, k)``
        (Jacobians formed a few examples at a time: :func:`~pyro_prune.curvature.jacobian_products`)."""
        U = self.precisions[self.key].vecs
        f, JJ, JU = cv.jacobian_products(net, x, likelihood, self.sites, U, budget=max(64, self.rank))
        return f, (JJ, JU)

    def glm_covariance(self, f, feats) -> torch.Tensor:
        r""":math:`J P^{-1} J^\top` by Woodbury in the rank-:math:`k` eigenbasis, with :math:`\tau` per site."""
        JJ, JU = feats
        prec = self.precisions[self.key]
        starts = torch.tensor([0] + [int(m.sum()) for m in self.sites.values()][:-1], device=prec.vecs.device)
        inv = prec.prior_vector()[starts.cumsum(0)].reciprocal()  # 1 / tau of each site
        return prec.glm_covariance(torch.einsum("s,sbkl->bkl", inv, JJ), torch.einsum("s,sbkr->bkr", inv, JU))


# -------------------------------------------------------------------------------------------------------------
# the structures by name
# -------------------------------------------------------------------------------------------------------------
def _layerwise(kind: LayerStructure, name: str) -> Callable[..., WeightPosterior]:
    def build(model, layers, map_values, subnet, max_memory, **options) -> WeightPosterior:
        selected = None if subnet is None else whole_layers(model, layers, subnet, name)
        return LayerwisePosterior(layers, map_values, kind, selected)

    return build


def _full(model, layers, map_values, subnet, max_memory, **options) -> WeightPosterior:
    return FullPosterior(layers, map_values, subnet_masks(model, subnet), max_memory)


def _lowrank(model, layers, map_values, subnet, max_memory, rank=None, eigensolver=None) -> WeightPosterior:
    if rank is None:
        raise ValueError("structure='lowrank' needs rank=k, the number of GGN eigenpairs it keeps")
    solver = cv.Eigensolver() if eigensolver is None else eigensolver
    return LowRankPosterior(layers, map_values, subnet_masks(model, subnet), max_memory, rank, solver)


#: ``structure`` name -> builder ``(model, layers, map_values, subnet, max_memory, **options) -> WeightPosterior``
#: (``options``: ``rank`` and ``eigensolver`` of ``"lowrank"``).
STRUCTURES: Dict[str, Callable[..., WeightPosterior]] = {
    "kron": _layerwise(KRON, "kron"),
    "diag": _layerwise(DIAG, "diag"),
    "full": _full,
    "lowrank": _lowrank,
}


def make_posterior(
    structure: str,
    model: BayesianModel,
    layers: Sequence[Layer],
    map_values: Mapping[str, torch.Tensor],
    subnet: Any = None,
    max_memory: float = float("inf"),
    rank: Optional[int] = None,
    eigensolver: Optional[cv.Eigensolver] = None,
) -> WeightPosterior:
    """The (not yet fitted) posterior of ``structure`` (``"kron"``, ``"diag"``, ``"full"`` or ``"lowrank"``).

    :raises ValueError: ``rank``/``eigensolver`` given for a structure other than ``"lowrank"``, or no ``rank``
        for ``"lowrank"``."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    if structure != "lowrank" and (rank is not None or eigensolver is not None):
        raise ValueError(f"rank and eigensolver are options of structure='lowrank', not of structure={structure!r}")
    options = {} if structure != "lowrank" else {"rank": rank, "eigensolver": eigensolver}
    return STRUCTURES[structure](model, layers, map_values, subnet, max_memory, **options)
