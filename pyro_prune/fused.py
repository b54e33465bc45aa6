r"""The fused mean-field objective of :func:`pyro_prune.fit` for a :class:`~pyro_prune.guides.LocalReparamGuide`.

For such a guide on a :class:`~pyro_prune.BayesianModel`, with :math:`\alpha = 1` and one particle, ``fit`` skips
Pyro's traces and minimizes

.. math::

    \mathcal L = -\frac{N}{B}\sum_{b=1}^{B} \log p\big(y_b \mid f(x_b;\, \mu, \sigma^2, \varepsilon_b)\big)
    + \beta\,\mathrm{KL}(q\,\|\,p),

the network run under :func:`~pyro_prune.layers.local_reparameterization` with ``sample_weights=False`` (each layer
draws its pre-activations per example from the guide's moments) and the KL from ``guide.total_kl()``: the estimator
``TraceMeanField_ELBO`` computes on the same model and guide, without its bookkeeping (see
:mod:`pyro_prune.guides.base` for the derivation).

``fit`` optimizes the guide's parameters as :class:`FlatParameters`: the guide's
:class:`~pyro_prune.guides.base.FlatLayout` (one flat tensor per dtype/device, one optimizer tensor, one gradient
buffer zeroed in place each step) and the model's own parameters.

**The power likelihood** (``fit(..., alpha_on="likelihood")``, Li & Gal 2017 [1]). With :math:`\alpha \ne 1` and
:math:`K` particles the same path minimizes

.. math::

    \mathcal L_\alpha = -\frac{N}{B}\sum_{b=1}^{B} \frac{1}{1-\alpha}
    \log \frac1K\sum_{k=1}^{K} p\big(y_b \mid f(x_b;\, \mu, \sigma^2, \varepsilon_{kb})\big)^{1-\alpha}
    + \beta\,\mathrm{KL}(q\,\|\,p),

the Rényi power applied to each example's likelihood while the KL stays in closed form: unlike the joint Rényi
bound of ``pyro.infer.RenyiELBO`` it never evaluates the prior density at a sampled weight, so it is defined for the
improper log-uniform priors of sparse variational dropout (whose density is infinite at :math:`w = 0`, where pruned
weights collapse). As :math:`\alpha \to 1` it tends to the ELBO; it is not a bound on :math:`\log p(y)` for
:math:`\alpha < 1` (it is Li & Gal's "black-box α" energy with :math:`1-\alpha` their :math:`\alpha`). The
:math:`K` particles are :math:`K` copies of the batch through the locally reparameterized network (independent
pre-activation noise per copy).

[1] Yingzhen Li, Yarin Gal. "Dropout Inference in Bayesian Neural Networks with Alpha-divergences", ICML 2017.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import pyro.optim
import torch

from .guides.base import LocalReparamGuide
from .model import BayesianModel
from .model.layers import local_reparameterization
from .training import PerParamOptimizer, TorchOptimizer, named_module_parameters

__all__ = [
    "FlatParameters",
    "can_fuse",
    "fusable",
    "takes_fused_path",
    "fused_loss",
    "fused_optimizer",
    "power_mean_log",
]


def fusable(model: Any, guide: Any) -> bool:
    """Whether ``model`` and ``guide`` can take the fused path at all: a :class:`~pyro_prune.BayesianModel` whose
    sites are all Bayesian layers' weights, a :class:`~pyro_prune.guides.LocalReparamGuide` using local
    reparameterization, and an analytic KL for every site."""
    if not isinstance(model, BayesianModel):
        return False
    if not isinstance(guide, LocalReparamGuide) or not guide.uses_local_reparameterization:
        return False
    if any(info.kind == "other" for info in model.sites.values()):
        return False
    try:
        with torch.no_grad():
            guide.total_kl()
    except NotImplementedError:  # no closed-form KL for some site: Monte Carlo through Pyro instead
        return False
    return True


def can_fuse(model: Any, guide: Any, alpha: float, num_particles: int, alpha_on: str = "joint") -> bool:
    """Whether the fused objective applies: :func:`fusable`, and either the mean-field ELBO (``alpha == 1``, one
    particle) or the power likelihood (``alpha_on="likelihood"``, any ``alpha`` and ``num_particles``)."""
    elbo = alpha == 1.0 and num_particles == 1
    return (elbo or alpha_on == "likelihood") and fusable(model, guide)


def takes_fused_path(model: Any, guide: Any, alpha: float, num_particles: int, alpha_on: str = "joint") -> bool:
    """:func:`can_fuse`, raising when ``alpha_on="likelihood"`` is asked of a model and guide that cannot take the
    fused path (the power likelihood exists only there).

    :raises ValueError: ``alpha_on="likelihood"`` and not :func:`fusable`.
    """
    if alpha_on == "likelihood" and not fusable(model, guide):
        raise ValueError(
            "alpha_on='likelihood' needs a BayesianModel of Linear/Conv layers and a LocalReparamGuide with local "
            "reparameterization and a closed-form KL for every site (AutoSparseVD, AutoGroupSparse, "
            f"AutoMeanFieldNormal with Gaussian priors); got {type(guide).__name__}"
        )
    return can_fuse(model, guide, alpha, num_particles, alpha_on)


def fused_loss(
    model: BayesianModel,
    guide: LocalReparamGuide,
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float,
    check: bool = True,
    alpha: float = 1.0,
    num_particles: int = 1,
) -> Tuple[torch.Tensor, float]:
    r"""The fused loss :math:`\mathcal L` (or :math:`\mathcal L_\alpha` with ``alpha != 1`` or several particles)
    of one batch and its mean log-likelihood :math:`\frac1{KB}\sum_{k,b}\log p(y_b\mid\cdot)`; returns
    ``(loss, mean log-likelihood)``.

    The data checks (finite ``x``, valid labels, one row of ``y`` per row of ``x``) run unless ``check=False``;
    ``fit`` checks every batch of every epoch (an invalid label such as ``-100`` would otherwise be ignored by the
    cross-entropy kernel, or crash a CUDA device).
    """
    if check:
        model._check_x(x)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one row per row of x: x has shape {tuple(x.shape)}, y {tuple(y.shape)}")
    k = num_particles
    xs, ys = (x, y) if k == 1 else (x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k, *([1] * (y.dim() - 1))))
    with local_reparameterization(guide, sample_weights=False):
        out = model.run_net(xs)
    if check and k > 1:  # the checks see the batch once (a batch of K copies could exceed dataset_size)
        model.likelihood.check_observed(y, out[: x.shape[0]])
    ll = model.likelihood.log_likelihood(out, ys, check=check and k == 1).reshape(k, x.shape[0])
    loss = -power_mean_log(ll, alpha).sum() * (model.dataset_size / x.shape[0])
    if beta != 0.0:
        loss = loss + beta * guide.total_kl()
    return loss, float(ll.detach().mean())


def power_mean_log(ll: torch.Tensor, alpha: float) -> torch.Tensor:
    r""":math:`\frac{1}{1-\alpha}\log\frac1K\sum_k e^{(1-\alpha)\,\ell_{kb}}` per column of ``ll`` (shape
    ``(K, B)``); the mean over :math:`k` at :math:`\alpha = 1` (its limit)."""
    if alpha == 1.0 or ll.shape[0] == 1:
        return ll.mean(0)
    power = 1.0 - alpha
    return (torch.logsumexp(power * ll, dim=0) - math.log(ll.shape[0])) / power


def fused_optimizer(
    optimizer: pyro.optim.PyroOptim, named: Mapping[str, torch.Tensor]
) -> Union[TorchOptimizer, PerParamOptimizer]:
    """The optimizer of the fused path over the parameters ``named`` (``{name: parameter}``, gradients in ``.grad``).

    A ``pyro.optim`` wrapper of a torch optimizer with fixed arguments becomes one torch optimizer over all
    parameters (with ``foreach=True`` where the optimizer takes it: one multi-tensor update instead of one per
    parameter); any other ``PyroOptim`` (per-parameter arguments, learning-rate schedulers) steps each parameter
    with its own optimizer, as Pyro's ``SVI`` does. Either exports and loads its state by parameter name
    (:mod:`pyro_prune.training`).
    """
    args = getattr(optimizer, "pt_optim_args", None)
    ctor = getattr(optimizer, "pt_optim_constructor", None)
    torch_ctor = isinstance(ctor, type) and issubclass(ctor, torch.optim.Optimizer)
    if isinstance(args, dict) and torch_ctor and not isinstance(optimizer, pyro.optim.PyroLRScheduler):
        if "foreach" in inspect.signature(ctor).parameters and "foreach" not in args:
            args = {**args, "foreach": True}
        return TorchOptimizer(ctor(list(named.values()), **args), list(named))
    return PerParamOptimizer(optimizer)


class FlatParameters:
    """The parameters the fused path optimizes in one ``fit``: the guide's in a
    :class:`~pyro_prune.guides.base.FlatLayout` (one flat tensor per dtype/device, named ``"guide.flat0"``...),
    then the model's own (BatchNorm...). :meth:`release` ends the layout.

    :ivar named: ``{name: parameter}`` in the optimizer's order.
    """

    def __init__(self, guide: LocalReparamGuide, model: Any):
        self.guide = guide
        self.layout = guide.flat_layout()
        self.named: Dict[str, torch.Tensor] = {f"guide.{n}": leaf for n, leaf in self.layout.leaves.items()}
        in_guide = {id(p) for p in self.layout.params.values()}
        for name, p in named_module_parameters(guide, model).items():
            if id(p) not in in_guide:
                self.named[name] = p
        self._flat_names = {f"guide.{n}": n for n in self.layout.leaves}

    def zero_grads(self) -> None:
        """Zero the flat gradient buffers in place and drop the model parameters' gradients."""
        for name, p in self.named.items():
            if name in self._flat_names and p.grad is not None:
                p.grad.zero_()
            else:
                p.grad = None

    def gradient_name(self, name: str) -> str:
        """The name to report for a non-finite gradient of ``name``: for a flat buffer, its first parameter with a
        non-finite gradient (``"guide.locs.0.weight_unconstrained"``)."""
        leaf = self._flat_names.get(name)
        found: Optional[str] = self.layout.locate(leaf) if leaf is not None else None
        return f"guide.{found}" if found is not None else name

    def release(self) -> None:
        """End the layout: each guide parameter its own storage again, gradients dropped."""
        self.guide.release_layout()
