r"""Online evidence maximization while training (Immer et al. 2021 [1]; MacKay's evidence framework [2]).

:func:`fit_marglik` trains the plain network of a :class:`~pyro_prune.BayesianModel` by MAP and tunes the Gaussian
prior precision :math:`\tau` (one, or one per layer) and, for a Gaussian likelihood, the observation noise
:math:`\sigma` by the Laplace marginal likelihood on the training data, so no validation split is needed.

**MAP steps.** Each mini-batch :math:`B` of a data set of :math:`N` examples takes one optimizer step on

.. math::

    L(\theta) = -\frac{1}{|B|} \sum_{b \in B} \log p(y_b \mid f_\theta(x_b), \sigma)
    + \frac{1}{2N} \sum_l \tau_l \|\theta_l\|^2,

the negative log joint :math:`-\log p(\mathcal D \mid \theta) - \log p(\theta \mid \tau)` per example (up to
constants), with the current :math:`\tau` and :math:`\sigma` held fixed; :math:`\theta_l` is layer :math:`l`'s weight
and bias (the Laplace guide's layers; other parameters, e.g. BatchNorm's, have no prior).

**Evidence steps.** After every ``marglik_every``-th epoch past ``burn_in`` (and always after the last epoch), a
Laplace posterior (:func:`~pyro_prune.laplace_guide`, ``structure="kron"`` by default) is fitted at the current
weights (one curvature pass; each layer's eigendecomposition is then fixed), and ``hyper_steps`` Adam steps
(learning rate ``hyper_lr``, state kept across evidence steps) ascend

.. math::

    \log p(\mathcal D \mid \tau, \sigma) \approx \log p(\mathcal D \mid \theta^*, \sigma)
    - \tfrac12 \sum_l \tau_l \|\theta^*_l\|^2 + \tfrac12 \sum_l P_l \log \tau_l
    - \tfrac12 \log\det\big(\mathrm{GGN}(\sigma) + \mathrm{diag}(\tau)\big)

in :math:`\log\tau` (and :math:`\log\sigma`) through :meth:`LaplaceGuide.log_marginal_likelihood
<pyro_prune.guides.laplace.LaplaceGuide.log_marginal_likelihood>` (each step costs a pass over the fixed
eigenvalues, no curvature pass). The guide of the last evidence step, at the final weights and the final
:math:`\tau`, :math:`\sigma`, is the result's :attr:`MarglikResult.guide`: a plain
:class:`~pyro_prune.guides.laplace.LaplaceGuide` (``pp.predict``, ``pp.prune``, ``pp.save``/``pp.load``).

**Where the network lives.** The user's model is not modified: training runs on a copy of its plain network
(``model.template()`` at the weights it had at ``bayesianize`` time, or ``start_from``); the trained network is
:attr:`MarglikResult.net` and its weights are the guide's MAP (``guide.median()``).

References

[1] Alexander Immer, Matthias Bauer, Vincent Fortuin, Gunnar Rätsch, Mohammad Emtiyaz Khan. "Scalable Marginal
    Likelihood Estimation for Model Selection in Deep Learning", ICML 2021 (Algorithm 1).
[2] David J. C. MacKay. "A Practical Bayesian Framework for Backpropagation Networks", Neural Computation 1992.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence

import pyro.distributions as dist
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..._checks import as_batches, check_bool, check_choice, check_int, check_positive, unpack_batch
from ...model import BayesianModel
from ...model.likelihoods import Gaussian, Likelihood
from ...training import History
from .guide import LaplaceGuide, laplace_guide
from .layer_view import Layer, make_layers, map_values, plain_net

__all__ = ["MarglikResult", "fit_marglik", "map_objective"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class MarglikResult:
    """What :func:`fit_marglik` returns.

    :ivar guide: the :class:`~pyro_prune.guides.laplace.LaplaceGuide` at the trained weights, with the tuned
        :attr:`~pyro_prune.guides.laplace.LaplaceGuide.prior_precision` (and
        :attr:`~pyro_prune.guides.laplace.LaplaceGuide.sigma_noise`).
    :ivar net: the trained plain network (a copy; the model's own network is untouched), in eval mode.
    :ivar history: one record per epoch: ``epoch``, ``loss`` (mean of :func:`map_objective` over the epoch's
        batches), ``seconds``, ``val_nll`` (and ``val_accuracy`` for classification) with ``val_data``; after an
        evidence step also ``log_tau`` (a float, or a list with one entry per layer), ``sigma`` (Gaussian
        likelihoods) and ``log_marglik`` (the log evidence at the new :math:`\\tau`, :math:`\\sigma`).
    """

    guide: LaplaceGuide
    net: nn.Module
    history: History

    @property
    def prior_precision(self) -> torch.Tensor:
        r"""The tuned :math:`\tau` (shape ``()`` or ``(num_layers,)``)."""
        return self.guide.prior_precision

    @property
    def sigma_noise(self) -> Optional[torch.Tensor]:
        r"""The tuned (or fixed) :math:`\sigma` of a Gaussian likelihood, else ``None``."""
        return self.guide.sigma_noise

    @property
    def evidence_steps(self) -> List[Dict[str, Any]]:
        """The records of the epochs that ended with an evidence step."""
        return [r for r in self.history.records if "log_marglik" in r]


def map_objective(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    likelihood: Likelihood,
    layers: Sequence[Layer],
    prior_precision: torch.Tensor,
    num_data: int,
    sigma_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""The MAP objective of one batch (module docstring):
    :math:`-\frac{1}{|B|}\sum_b \log p(y_b \mid f(x_b), \sigma) + \frac{1}{2N}\sum_l \tau_l\|\theta_l\|^2`.

    :param net: the plain network (its parameters named as the model's weight sites).
    :param layers: the Laplace guide's layers (``make_layers(model)``), in the order of a per-layer ``tau``.
    :param prior_precision: :math:`\tau`, shape ``()`` or ``(len(layers),)``.
    :param num_data: :math:`N`.
    :param sigma_noise: :math:`\sigma` of a Gaussian likelihood (``None``: the likelihood's own).
    :returns: a scalar tensor.
    """
    out = net(x)
    if isinstance(likelihood, Gaussian):
        likelihood.check_observed(y, out)
        sigma = likelihood.noise_scale(out) if sigma_noise is None else sigma_noise.to(out)
        loc = out.squeeze(-1) if y.dim() == 1 else out
        log_lik = dist.Normal(loc, sigma).log_prob(y.to(out.dtype))
        log_lik = log_lik if y.dim() == 1 else log_lik.sum(-1)
    else:
        log_lik = likelihood.log_likelihood(out, y)
    params = dict(net.named_parameters())
    taus = prior_precision.expand(len(layers)) if prior_precision.dim() == 0 else prior_precision
    penalty = sum(
        t * sum(params[s].square().sum() for s in (layer.weight, layer.bias) if s is not None)
        for t, layer in zip(taus.to(out.dtype), layers)
    )
    return -log_lik.mean() + 0.5 * penalty / num_data


@dataclass
class _MarglikPlan:
    """The arguments of :func:`fit_marglik`, checked on construction."""

    model: BayesianModel
    data: Any
    epochs: int
    structure: str
    lr: float
    optimizer: Optional[OptimizerFactory]
    hyper_lr: float
    hyper_steps: int
    marglik_every: int
    burn_in: int
    prior_structure: str
    prior_precision: float
    sigma_noise: bool
    val_data: Any
    progress: bool

    def __post_init__(self) -> None:
        if not isinstance(self.model, BayesianModel):
            raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(self.model).__name__}")
        self.model.likelihood.check_curvature()
        check_int("epochs", self.epochs, 1)
        check_choice("structure", self.structure, ("kron", "diag", "full"))
        check_positive("lr", self.lr)
        check_positive("hyper_lr", self.hyper_lr)
        check_int("hyper_steps", self.hyper_steps, 1)
        check_int("marglik_every", self.marglik_every, 1)
        check_int("burn_in", self.burn_in, 0)
        check_choice("prior_structure", self.prior_structure, ("scalar", "layer"))
        check_positive("prior_precision", self.prior_precision)
        check_bool("sigma_noise", self.sigma_noise)
        check_bool("progress", self.progress)
        if self.sigma_noise and not isinstance(self.model.likelihood, Gaussian):
            raise ValueError(
                "sigma_noise=True needs a Gaussian likelihood (pp.Gaussian with a fixed or learned scale); the "
                f"model's likelihood is {type(self.model.likelihood).__name__}"
            )
        if self.optimizer is not None and not callable(self.optimizer):
            raise TypeError(f"optimizer must be a callable params -> torch.optim.Optimizer, got {self.optimizer!r}")
        self.data = as_batches(self.data)
        if self.val_data is not None:
            self.val_data = as_batches(self.val_data, "val_data")

    def is_evidence_epoch(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with an evidence step."""
        done = epoch + 1
        last = epoch == self.epochs - 1
        return last or (done > self.burn_in and (done - self.burn_in) % self.marglik_every == 0)


class _Hyper:
    r""":math:`\log\tau` (``(1,)`` or ``(num_layers,)``) and :math:`\log\sigma` (``(1,)`` or ``None``) in float64, and
    the Adam optimizer that ascends the evidence in them (its state kept across evidence steps)."""

    def __init__(self, plan: _MarglikPlan, num_layers: int):
        model = plan.model
        self.dtype, self.scalar = model.dtype, plan.prior_structure == "scalar"
        n = 1 if self.scalar else num_layers
        start = math.log(plan.prior_precision)
        self.log_tau = torch.full((n,), start, dtype=torch.float64, device=model.device, requires_grad=True)
        params = [self.log_tau]
        self.log_sigma: Optional[torch.Tensor] = None
        self.fixed_sigma: Optional[torch.Tensor] = None
        if isinstance(model.likelihood, Gaussian):
            ref = torch.zeros((), dtype=model.dtype, device=model.device)
            sigma0 = model.likelihood.noise_scale(ref)  # raises for an unset learned scale
            if plan.sigma_noise:
                self.log_sigma = sigma0.double().log().reshape(1).clone().requires_grad_(True)
                params.append(self.log_sigma)
            else:
                self.fixed_sigma = sigma0.detach().clone()
        self.optimizer = torch.optim.Adam(params, lr=plan.hyper_lr)

    def tau(self) -> torch.Tensor:
        """:math:`\\tau` in the model's dtype (differentiable), shape ``()`` (scalar) or ``(num_layers,)``."""
        t = self.log_tau.exp().to(self.dtype)
        return t[0] if self.scalar else t

    def sigma(self) -> Optional[torch.Tensor]:
        """:math:`\\sigma` (differentiable when tuned), shape ``()``, or ``None`` without a Gaussian likelihood."""
        if self.log_sigma is None:
            return self.fixed_sigma
        return self.log_sigma.exp().to(self.dtype)[0]

    def ascend(self, guide: LaplaceGuide, steps: int) -> None:
        """``steps`` Adam steps on :math:`-\\log p(\\mathcal D \\mid \\tau, \\sigma)` under ``guide``'s fixed
        curvature; then set the new values on the guide."""
        for _ in range(steps):
            self.optimizer.zero_grad()
            sigma = self.sigma() if self.log_sigma is not None else None
            loss = -guide.log_marginal_likelihood(self.tau(), sigma)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            if self.log_sigma is not None:
                guide.set_sigma_noise(self.sigma())
            guide.set_prior_precision(self.tau())

    def record(self) -> Dict[str, Any]:
        """``log_tau`` (float or list) and ``sigma`` (Gaussian likelihoods) for the history."""
        log_tau = self.log_tau.detach().cpu().tolist()
        out: Dict[str, Any] = {"log_tau": log_tau[0] if self.scalar else log_tau}
        sigma = self.sigma()
        if sigma is not None:
            out["sigma"] = float(sigma.detach())
        return out


class _MarglikTrainer:
    """The state of one :func:`fit_marglik` run: the network being trained, its optimizer, the hyperparameters."""

    def __init__(self, plan: _MarglikPlan, start_from: Any):
        self.plan = plan
        model = plan.model
        self.layers = make_layers(model)
        start, extra = map_values(model, start_from)
        self.net = plain_net(model, extra, start)
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.optimizer = self._optimizer()
        self.hyper = _Hyper(plan, len(self.layers))
        self.guide: Optional[LaplaceGuide] = None
        self.history = History()

    def _optimizer(self) -> torch.optim.Optimizer:
        params = list(self.net.parameters())
        factory = self.plan.optimizer
        opt = torch.optim.Adam(params, lr=self.plan.lr) if factory is None else factory(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer must return a torch.optim.Optimizer, got {type(opt).__name__}")
        if any(group.get("weight_decay", 0) for group in opt.param_groups):
            raise ValueError(
                "optimizer: weight_decay must be 0 (the Gaussian prior with the tuned tau is the weight decay)"
            )
        return opt

    def map_epoch(self) -> float:
        """One pass of MAP steps over the data; returns the mean objective over the batches."""
        plan, model = self.plan, self.plan.model
        self.net.train()
        tau, sigma = self.hyper.tau().detach(), self.hyper.sigma()
        sigma = None if sigma is None else sigma.detach()
        total, batches = 0.0, 0
        for batch in plan.data:
            x, y = unpack_batch(batch, "data", model.device)
            x = x.to(model.dtype) if x.is_floating_point() else x
            self.optimizer.zero_grad()
            loss = map_objective(self.net, x, y, model.likelihood, self.layers, tau, model.dataset_size, sigma)
            loss.backward()
            self.optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        if batches == 0:
            raise ValueError("data yielded no batches")
        return total / batches

    def evidence_step(self) -> Dict[str, Any]:
        """Fit a Laplace posterior at the current weights and take the hyperparameter steps; returns the record."""
        plan = self.plan
        self.net.eval()
        with torch.no_grad():
            tau = self.hyper.tau()
        self.guide = laplace_guide(plan.model, plan.data, plan.structure, map_from=self.net, prior_precision=tau)
        if self.hyper.log_sigma is not None:
            with torch.no_grad():
                self.guide.set_sigma_noise(self.hyper.sigma())
        self.hyper.ascend(self.guide, plan.hyper_steps)
        with torch.no_grad():
            log_marglik = float(self.guide.log_marginal_likelihood())
        return {**self.hyper.record(), "log_marglik": log_marglik}

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean negative log-likelihood (and accuracy for classification) of the network on ``val_data``."""
        model, lik = self.plan.model, self.plan.model.likelihood
        self.net.eval()
        nll, correct, n = 0.0, 0.0, 0
        sigma = self.hyper.sigma()
        for batch in self.plan.val_data:
            x, y = unpack_batch(batch, "val_data", model.device)
            x = x.to(model.dtype) if x.is_floating_point() else x
            no_prior = torch.zeros((), dtype=model.dtype, device=model.device)
            nll += float(map_objective(self.net, x, y, lik, self.layers, no_prior, 1, sigma)) * len(y)
            if lik.task == "classification" and hasattr(lik, "probs"):
                correct += float((lik.probs(self.net(x)).argmax(-1) == y).sum())
            n += len(y)
        out = {"val_nll": nll / n}
        if lik.task == "classification" and hasattr(lik, "probs"):
            out["val_accuracy"] = correct / n
        return out

    def run(self) -> MarglikResult:
        """Every epoch: MAP steps, then (on evidence epochs) an evidence step; returns the result."""
        plan = self.plan
        bar = tqdm(range(plan.epochs), disable=not plan.progress, desc="fit_marglik", unit="epoch")
        try:
            for epoch in bar:
                t0 = time.perf_counter()
                record: Dict[str, Any] = {"epoch": epoch, "loss": self.map_epoch()}
                if plan.is_evidence_epoch(epoch):
                    record.update(self.evidence_step())
                if plan.val_data is not None:
                    record.update(self.validate())
                record["seconds"] = time.perf_counter() - t0
                self.history.records.append(record)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "log_marglik", "log_tau")
                                 and isinstance(v, float)})  # fmt: skip
        finally:
            bar.close()
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        return MarglikResult(self.guide, self.net, self.history)


def fit_marglik(
    model: BayesianModel,
    data: Any,
    epochs: int,
    *,
    structure: Literal["kron", "diag", "full"] = "kron",
    lr: float = 1e-3,
    optimizer: Optional[OptimizerFactory] = None,
    hyper_lr: float = 0.1,
    hyper_steps: int = 10,
    marglik_every: int = 1,
    burn_in: int = 0,
    prior_structure: Literal["scalar", "layer"] = "layer",
    prior_precision: float = 1.0,
    sigma_noise: bool = False,
    start_from: Any = None,
    val_data: Any = None,
    progress: bool = True,
) -> MarglikResult:
    r"""Train a network by MAP while tuning its prior precision (and Gaussian noise) by the Laplace evidence
    (Immer et al. 2021; module docstring): a tuned prior without a validation split.

    :param model: a :class:`~pyro_prune.BayesianModel` whose likelihood has an output Hessian (as for
        :func:`~pyro_prune.laplace_guide`); its network is copied, never modified. :math:`N` is the likelihood's
        ``dataset_size``.
    :param data: the training data: a ``DataLoader`` of ``(x, y)`` or one ``(x, y)`` tuple (full batch).
    :param epochs: passes over ``data``.
    :param structure: the Laplace curvature of the evidence steps: ``"kron"`` (KFAC), ``"diag"`` or ``"full"``.
    :param lr: Adam learning rate of the MAP steps (ignored with ``optimizer``).
    :param optimizer: ``optimizer(params) -> torch.optim.Optimizer`` for the MAP steps, without weight decay (the
        prior is the weight decay), e.g. ``lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)``.
    :param hyper_lr: Adam learning rate on :math:`\log\tau` (and :math:`\log\sigma`).
    :param hyper_steps: Adam steps per evidence step.
    :param marglik_every: an evidence step after every ``marglik_every``-th epoch past ``burn_in``.
    :param burn_in: epochs of MAP steps before the first evidence step. An evidence step always follows the last
        epoch, so the returned :math:`\tau` is tuned at the returned weights.
    :param prior_structure: one :math:`\tau` (``"scalar"``) or one per layer (``"layer"``, the default of [1]).
    :param prior_precision: the starting :math:`\tau > 0`.
    :param sigma_noise: also tune the noise :math:`\sigma` of a Gaussian likelihood (starting at the likelihood's
        scale); otherwise the likelihood's scale is used throughout.
    :param start_from: the starting weights: ``None`` (the network's weights at ``bayesianize`` time), an
        ``nn.Module`` or a ``state_dict`` (as ``map_from`` of :func:`~pyro_prune.laplace_guide`).
    :param val_data: optional held-out batches, only scored (``val_nll``, ``val_accuracy``) each epoch, never used
        for a choice.
    :param progress: show a tqdm progress bar.
    :returns: a :class:`MarglikResult` (``guide``, ``net``, ``history``).
    :raises ValueError / TypeError: invalid arguments (named in the message), e.g. ``sigma_noise=True`` without
        a Gaussian likelihood or an optimizer with weight decay.
    """
    plan = _MarglikPlan(
        model, data, epochs, structure, lr, optimizer, hyper_lr, hyper_steps, marglik_every, burn_in, prior_structure,
        prior_precision, sigma_noise, val_data, progress,
    )  # fmt: skip
    return _MarglikTrainer(plan, start_from).run()
