r"""Weight priors of :func:`~pyro_prune.bayesianize`: how a prior specification becomes one prior per parameter.

A specification (:data:`PriorSpec`) is one of

* a ``Distribution`` :math:`p` with scalar (or broadcastable) batch shape: every ``Linear``/``Conv`` parameter
  :math:`w` of shape :math:`(d_1, …, d_n)` gets :math:`p` expanded to that shape with all dimensions as event
  dimensions, :math:`p(w) = \prod_{i} p(w_i)`;
* a callable ``(name, module, param) -> Distribution | None`` (``None``: keep a point estimate);
* a mapping ``{name: Distribution | None}``;
* a :class:`~pyro_prune.model.group_prior.GroupPrior` (group scale mixtures; resolved by ``bayesianize`` itself).

:class:`WeightsOnly` is a ready callable: the prior on the ``Linear``/``Conv`` weights, every bias a point estimate.

Priors are stored once and cast to the model's dtype/device when a layer first needs them
(:func:`cast_distribution`), so ``model.to(torch.float64)`` or ``.cuda()`` moves them along.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import pyro.distributions as dist
import torch
import torch.nn as nn

from .group_prior import GroupPrior

__all__ = [
    "PriorFn",
    "PriorSpec",
    "SitePrior",
    "WeightsOnly",
    "cast_distribution",
    "fit_prior",
    "resolve_prior",
    "check_prior_spec",
]

PriorFn = Callable[[str, nn.Module, torch.Tensor], Optional[dist.Distribution]]
PriorSpec = Union[dist.Distribution, PriorFn, Mapping[str, Optional[dist.Distribution]], GroupPrior]


class SitePrior:
    """``PyroSample`` prior callable: the owning layer's prior for one parameter, in the layer's dtype/device.

    :param param: the parameter name on the layer (``"weight"``, ``"bias"``, ``"weight_scale"``).
    """

    def __init__(self, param: str):
        self.param = param

    def __call__(self, module: nn.Module) -> dist.Distribution:
        return module._pp_prior(self.param)


#: The layer types whose weights :class:`WeightsOnly` covers: those ``bayesianize`` converts (the keys of
#: ``bayesian_layers.LAYER_TYPES``, which imports this module; a test keeps the two equal).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class WeightsOnly:
    r"""A prior specification for :func:`~pyro_prune.bayesianize`: ``prior`` on the weight of every
    ``Linear``/``Conv1d``/``Conv2d`` layer, every other parameter (the biases) a point estimate.

    This is the model of sparse variational dropout as Molchanov et al. (2017) train it, where only the weights carry
    multiplicative noise and the log-uniform prior; ``bayesianize(net, prior)`` with a bare ``Distribution`` puts
    the prior on the biases too. On the mnist1d front of ``bench/front.py`` (10 paired splits, 10,000 test signals
    each) ``AutoSparseVD`` with ``WeightsOnly(LogUniform())`` was 1.9 pp [1.6, 2.3] more accurate at 5× than with
    Bayesian biases (``README``, "Benchmarks"). Picklable; ``bayesianize`` does not keep it.

    :param prior: a ``Distribution`` with scalar (or broadcastable) batch shape, as for a bare prior.
    :raises TypeError: ``prior`` is not a ``Distribution``.
    """

    def __init__(self, prior: dist.Distribution):
        if not isinstance(prior, torch.distributions.Distribution):
            raise TypeError(f"prior must be a torch/Pyro Distribution, got {type(prior).__name__}")
        self.prior = prior

    def __call__(self, name: str, module: nn.Module, param: torch.Tensor) -> Optional[dist.Distribution]:
        """``prior`` for a ``Linear``/``Conv`` layer's ``weight``, ``None`` (a point estimate) otherwise."""
        return self.prior if type(module) in WEIGHT_LAYERS and name.rsplit(".", 1)[-1] == "weight" else None

    def __repr__(self) -> str:
        return f"WeightsOnly({self.prior!r})"


def check_prior_spec(prior: object) -> None:
    """Raise ``TypeError`` unless ``prior`` is a :data:`PriorSpec`."""
    if not (isinstance(prior, (torch.distributions.Distribution, Mapping, GroupPrior)) or callable(prior)):
        raise TypeError(f"prior must be a Distribution, a callable or a dict, got {type(prior).__name__}")


def _on(tensors: list, dtype: torch.dtype, device: torch.device) -> bool:
    return all(t.dtype == dtype and t.device == device for t in tensors)


def _rebuild(d: dist.Distribution, dtype: torch.dtype, device: torch.device) -> dist.Distribution:
    """A new ``type(d)`` from its ``arg_constraints`` parameters, floating tensors moved to ``dtype``/``device``."""
    kwargs = {}
    for k in d.arg_constraints:
        if k in ("probs", "logits") and k not in vars(d):
            continue  # the lazily derived twin of the parameter given
        try:
            v = getattr(d, k)
        except AttributeError:
            continue
        kwargs[k] = v.to(dtype=dtype, device=device) if torch.is_tensor(v) and v.is_floating_point() else v
    try:
        out = type(d)(**kwargs, validate_args=d._validate_args)
    except Exception as e:  # noqa: BLE001 - re-raised with advice
        raise TypeError(
            f"cannot move prior {d} to dtype={dtype}, device={device}; create the prior with tensors of that "
            "dtype/device, or pass a prior callable (name, module, param) -> Distribution"
        ) from e
    return out.expand(d.batch_shape) if out.batch_shape != d.batch_shape else out


def cast_distribution(d: dist.Distribution, dtype: torch.dtype, device: torch.device) -> dist.Distribution:
    """Rebuild ``d`` with its tensor parameters in ``dtype`` on ``device`` (a no-op when they already are).

    ``Independent`` and ``ExpandedDistribution`` wrappers are rebuilt around the cast base distribution.

    :raises TypeError: ``d`` cannot be rebuilt from its ``arg_constraints``.
    """
    tensors = [v for v in vars(d).values() if torch.is_tensor(v) and v.is_floating_point()]
    if _on(tensors, dtype, device) and not hasattr(d, "base_dist"):
        return d
    if isinstance(d, dist.Independent):
        return dist.Independent(cast_distribution(d.base_dist, dtype, device), d.reinterpreted_batch_ndims)
    if isinstance(d, dist.ExpandedDistribution):
        return cast_distribution(d.base_dist, dtype, device).expand(d.batch_shape)
    if hasattr(d, "base_dist") and _on(tensors, dtype, device):
        return d
    return _rebuild(d, dtype, device)


def fit_prior(prior: dist.Distribution, name: str, param: torch.Tensor) -> dist.Distribution:
    """Expand a prior to the parameter's shape and make every dimension an event dimension.

    :raises TypeError: ``prior`` is not a distribution.
    :raises ValueError: its event shape or batch shape does not fit ``param.shape``.
    """
    if not isinstance(prior, torch.distributions.Distribution):
        raise TypeError(f"prior for {name!r} must be a torch/Pyro Distribution or None, got {type(prior).__name__}")
    shape = param.shape
    full = prior.batch_shape + prior.event_shape
    if full == shape:
        return prior.to_event(len(prior.batch_shape)) if len(prior.batch_shape) else prior
    if prior.event_shape != torch.Size():
        raise ValueError(
            f"prior for {name!r} has event_shape {tuple(prior.event_shape)} but the parameter has shape {tuple(shape)}"
        )
    try:
        return prior.expand(shape).to_event(len(shape))
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"prior for {name!r} with batch_shape {tuple(prior.batch_shape)} cannot be expanded to {tuple(shape)}"
        ) from e


def resolve_prior(
    prior: PriorSpec, name: str, module: nn.Module, param: torch.Tensor, default_bayes: bool
) -> Optional[dist.Distribution]:
    """The fitted prior of parameter ``name`` under ``prior``, or ``None`` for a point estimate.

    :param default_bayes: whether a single ``Distribution`` applies to this parameter (``True`` for
        ``Linear``/``Conv`` parameters, ``False`` for the others, which only a callable or mapping can cover).
        A :class:`GroupPrior` never covers parameters outside ``Linear``/``Conv`` layers (``None``).
    """
    if isinstance(prior, GroupPrior):
        return None
    if isinstance(prior, torch.distributions.Distribution):
        return fit_prior(prior, name, param) if default_bayes else None
    if isinstance(prior, Mapping):
        d = prior.get(name)
        return None if d is None else fit_prior(d, name, param)
    d = prior(name, module, param)
    return None if d is None else fit_prior(d, name, param)
