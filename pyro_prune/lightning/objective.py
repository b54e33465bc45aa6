r"""One training step's objective of :func:`~pyro_prune.fit`, as a loss tensor a ``LightningModule`` returns.

:class:`StepObjective` picks the path ``fit`` picks (:func:`~pyro_prune.fused.can_fuse`) and evaluates the same
estimator through the same functions:

* **fused** (a :class:`~pyro_prune.guides.LocalReparamGuide` with local reparameterization at :math:`\alpha = 1`
  with one particle, or ``alpha_on="likelihood"``): :func:`~pyro_prune.fused.fused_loss`, the likelihood term
  and :math:`\beta\,\mathrm{KL}` from ``guide.total_kl()``;
* **ELBO** (any other guide at :math:`\alpha = 1`): ``TraceMeanField_ELBO.differentiable_loss`` with the KL weight
  applied by :class:`~pyro_prune.handlers.LatentScale` to every latent site of the model and the guide;
* **joint Rényi** (:math:`\alpha \ne 1`, ``alpha_on="joint"``): ``pyro.infer.RenyiELBO.loss_and_grads``, which
  backpropagates itself (Pyro 1.9 gives it no differentiable loss); the ``LightningModule`` then optimizes
  manually.

Under data parallelism the likelihood term is multiplied by :math:`c_r = W B_r / B`
(:func:`~pyro_prune.distributed.likelihood_factor`), so that the averaged gradient of the workers is the gradient on
their concatenated batch; the KL term is not scaled (see :mod:`pyro_prune.distributed`). The joint Rényi bound is
not a sum over examples, so its workers' averaged gradient is the mean of per-worker bounds, not the bound of
the concatenated batch (a warning says so).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, Tuple, Union

import pyro
import torch
from pyro.poutine.messenger import Messenger

from .._checks import check_choice, check_int, check_nonnegative, check_real
from .._checks.guide import check_guide
from ..distributed import likelihood_factor, world_size
from ..fused import fused_loss, takes_fused_path
from ..guides.base import LocalReparamGuide
from ..handlers import LatentScale, ObsRecorder
from ..model.layers import local_reparameterization
from ..objectives import ALPHA_ON, check_joint_renyi, make_elbo

__all__ = ["StepObjective", "ObservedScale"]


class ObservedScale(Messenger):
    """Multiply the log density of every observed sample site by ``factor`` (the worker's :math:`c_r`)."""

    def __init__(self, factor: float = 1.0):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and msg["is_observed"] and self.factor != 1.0:
            msg["scale"] = self.factor * msg["scale"]


class StepObjective:
    r"""The loss of one mini-batch as :func:`~pyro_prune.fit` computes it (module docstring).

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model ``model(x, y)``).
    :param guide: its guide, initialized (its parameters exist: ``guide(x, y)`` once, or a fitted/loaded guide).
    :param alpha: Rényi :math:`\alpha` (``fit``'s).
    :param num_particles: samples per step (``fit``'s).
    :param alpha_on: ``"joint"`` or ``"likelihood"`` (``fit``'s).
    :raises ValueError: ``alpha_on="likelihood"`` for a pair the fused path cannot take; the joint Rényi bound on
        an improper prior (:func:`~pyro_prune.objectives.check_joint_renyi`); invalid arguments.
    """

    def __init__(self, model: Callable, guide: Callable, alpha: float = 1.0, num_particles: int = 1,
                 alpha_on: str = "joint"):  # fmt: skip
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        check_guide(model, guide)
        self.model, self.guide = model, guide
        self.alpha = check_real("alpha", alpha)
        self.num_particles = check_int("num_particles", num_particles, 1)
        self.alpha_on = check_choice("alpha_on", alpha_on, ALPHA_ON)
        check_joint_renyi(model, self.alpha, self.alpha_on)
        self.fused = takes_fused_path(model, guide, self.alpha, self.num_particles, self.alpha_on)
        self.differentiable = self.fused or self.alpha == 1.0
        self.elbo = None if self.fused else make_elbo(model, self.alpha, self.num_particles)
        self.use_lrt = isinstance(guide, LocalReparamGuide) and guide.uses_local_reparameterization
        self._warned = False

    @property
    def path(self) -> str:
        """``"fused"``, ``"elbo"`` or ``"renyi"``."""
        return "fused" if self.fused else ("elbo" if self.differentiable else "renyi")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, beta: float) -> Tuple[Union[torch.Tensor, float], float]:
        r"""``(loss, mean log-likelihood)`` of the batch with KL weight :math:`\beta`.

        The loss is a differentiable tensor on the fused and ELBO paths; on the joint Rényi path a float, the
        gradients already accumulated in the parameters' ``.grad`` (Pyro's ``loss_and_grads``).
        """
        beta = check_nonnegative("beta", beta)
        factor = likelihood_factor(int(x.shape[0]), x)
        if self.fused:
            with pyro.validation_enabled(False):  # the data are checked by fused_loss
                nll, ell = fused_loss(self.model, self.guide, x, y, 0.0, True, self.alpha, self.num_particles)
                loss = factor * nll
                return (loss + beta * self.guide.total_kl() if beta != 0.0 else loss), ell
        if not self.differentiable and world_size() > 1 and not self._warned:
            self._warned = True
            warnings.warn(
                "the joint Rényi bound (alpha != 1, alpha_on='joint') is not a sum over examples: under data "
                "parallelism the averaged gradient is that of the mean of the workers' bounds, not of the bound on "
                "their concatenated batch (alpha_on='likelihood' decomposes exactly)",
                stacklevel=2,
            )
        recorder, latent = ObsRecorder(), LatentScale(beta)
        model_fn, guide_fn = latent(ObservedScale(factor)(recorder(self.model))), latent(self.guide)
        lrt = local_reparameterization(self.guide) if self.use_lrt else contextlib.nullcontext()
        with lrt:
            if self.differentiable:
                loss = self.elbo.differentiable_loss(model_fn, guide_fn, x, y)
            else:
                loss = self.elbo.loss_and_grads(model_fn, guide_fn, x, y)
        return loss, recorder.mean_log_likelihood()
