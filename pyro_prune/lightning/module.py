r""":class:`BayesianLightningModule`: :func:`~pyro_prune.fit`'s training as a PyTorch Lightning ``LightningModule``.

``Trainer(accelerator=..., devices=..., strategy="ddp", num_nodes=...)`` then brings data parallelism,
checkpointing, gradient clipping, mixed precision and early stopping. Per step the module minimizes ``fit``'s
objective (:class:`~pyro_prune.lightning.objective.StepObjective`: the fused mean-field path, Pyro's
``TraceMeanField_ELBO``, the power likelihood or the joint Rényi bound) with ``fit``'s KL weight

.. math::

    \beta_s = \beta_{\max} \cdot \min\!\Big(1, \frac{s}{E_{\text{warm-up}} \cdot S}\Big),

:math:`s` the optimizer steps taken, :math:`S` the steps per epoch, :math:`\beta_{\max}` = ``kl_weight``, and
``fit``'s Adam (``torch.optim.Adam(lr=lr)`` over the guide's and the model's parameters). It logs ``fit``'s
:class:`~pyro_prune.History` fields (``loss`` per training example and ``ell`` averaged over the epoch's batches,
``kl`` at the epoch's end, ``beta``, ``seconds``, and ``val_<metric>`` of the posterior-predictive ensemble of
``val_samples`` members: accuracy, nll, ece, brier, or rmse and nll) and keeps them in :attr:`history`.

Under DDP every worker's likelihood term is scaled so that the averaged gradient equals the single-process gradient
on the concatenated batch (:mod:`pyro_prune.distributed`); make each worker's data a shard of the training set
(Lightning's default ``DistributedSampler``) and keep the likelihood's ``dataset_size`` the *global* number of
training examples. Validation predictions are gathered from all workers before scoring.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import lightning.pytorch as pl
import torch

from .._checks import check_choice, check_int, check_positive, check_real, unpack_batch
from ..handlers import kl_term
from ..metrics import classification_metrics, regression_metrics
from ..model import BayesianModel
from ..objectives import ALPHA_ON, check_joint_renyi
from ..prediction import predict
from ..training import History, NonFiniteError, first_non_finite
from .objective import StepObjective

__all__ = ["BayesianLightningModule"]


class BayesianLightningModule(pl.LightningModule):
    r"""Train ``guide`` on ``model`` as :func:`~pyro_prune.fit` does, driven by a Lightning ``Trainer``.

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model that is an ``nn.Module``).
    :param guide: its guide, an ``nn.Module`` (every guide of this library; Pyro's autoguides).
    :param lr: Adam's learning rate.
    :param kl_warmup: epochs over which :math:`\beta` ramps from 0 to ``kl_weight`` (per optimizer step).
    :param kl_weight: the final KL weight :math:`\beta_{\max}` (below 1: a tempered posterior).
    :param alpha: Rényi :math:`\alpha` (``fit``'s).
    :param num_particles: samples per step (``fit``'s; vectorized where the model allows).
    :param alpha_on: ``"joint"`` or ``"likelihood"`` (``fit``'s).
    :param val_samples: ensemble size of the validation scores.
    :param example: one ``(x, y)`` batch that sets up a guide not yet run (its parameters must exist before the
        ``Trainer`` wraps the module for DDP and builds the optimizer); not needed for a fitted or loaded guide.
    :raises ValueError: invalid arguments (as ``fit``); when training starts (``setup``), a guide not set up (a fresh
        guide of this library is set up by loading a checkpoint's state into it).
    """

    def __init__(self, model: torch.nn.Module, guide: torch.nn.Module, lr: float = 1e-3, kl_warmup: int = 0,
                 kl_weight: float = 1.0, alpha: float = 1.0, num_particles: int = 1, alpha_on: str = "joint",
                 val_samples: int = 20, example: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):  # fmt: skip
        super().__init__()
        for name, value in (("model", model), ("guide", guide)):
            if not isinstance(value, torch.nn.Module):
                raise TypeError(f"{name} must be an nn.Module (a BayesianModel, a guide), got {type(value).__name__}")
        self.lr = check_positive("lr", lr)
        self.kl_warmup = check_int("kl_warmup", kl_warmup, 0)
        self.val_samples = check_int("val_samples", val_samples, 1)
        self.kl_weight = check_positive("kl_weight", kl_weight)
        if example is not None:
            with torch.no_grad():
                guide(*unpack_batch(example, "example"))
        self.model, self.guide = model, guide
        alpha, alpha_on = check_real("alpha", alpha), check_choice("alpha_on", alpha_on, ALPHA_ON)
        check_joint_renyi(model, alpha, alpha_on)  # as fit: before any training, set up or not
        self._objective_args = (alpha, check_int("num_particles", num_particles, 1), alpha_on)
        self._objective: Optional[StepObjective] = None
        if self._set_up():
            self._objective = StepObjective(model, guide, *self._objective_args)  # argument errors now
        self.automatic_optimization = alpha == 1.0 or alpha_on == "likelihood"  # else Pyro's RenyiELBO backpropagates
        self.save_hyperparameters(ignore=["model", "guide", "example"])
        self.history = History()
        self._sums: List[float] = [0.0, 0.0, 0.0]  # loss, ell, batches of the epoch (this worker)
        self._last: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._loss: Any = None
        self._beta, self._t0 = 0.0, 0.0
        self._kl: Optional[float] = None
        self._val: List[Tuple[torch.Tensor, ...]] = []
        self._val_scores: Dict[str, float] = {}

    # -- the objective ----------------------------------------------------------------------------------
    def _set_up(self) -> bool:
        return getattr(self.guide, "prototype_trace", True) is not None

    @property
    def objective(self) -> StepObjective:
        """The step's objective, built once the guide is set up (by ``example``, or by loading a checkpoint's state
        into a fresh guide of this library)."""
        if self._objective is None:
            if not self._set_up():
                raise ValueError("guide is not set up: pass example=(x, y) (one batch), or run guide(x, y) once")
            self._objective = StepObjective(self.model, self.guide, *self._objective_args)
        return self._objective

    def setup(self, stage: str) -> None:
        """Before the ``Trainer`` wraps the module (DDP) and builds the optimizer: the guide's parameters must exist."""
        self.objective  # noqa: B018 - raises when the guide is not set up

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """``fit``'s optimizer: Adam with learning rate ``lr`` over every parameter of the guide and the model."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def beta(self) -> float:
        """The KL weight of the current step (module docstring); per epoch when the epoch length is unknown."""
        if not self.kl_warmup:
            return self.kl_weight
        steps = self.trainer.num_training_batches
        if steps == float("inf") or not steps:
            return self.kl_weight * min(1.0, self.current_epoch / self.kl_warmup)
        per_epoch = -(-int(steps) // self.trainer.accumulate_grad_batches)
        return self.kl_weight * min(1.0, self.global_step / (self.kl_warmup * per_epoch))

    def loss(self, batch: Any, beta: Optional[float] = None) -> Tuple[Any, float]:
        r"""``(loss, mean log-likelihood)`` of one batch, the likelihood scaled for data parallelism
        (:class:`~pyro_prune.lightning.objective.StepObjective`); ``beta`` defaults to :meth:`beta`."""
        x, y = unpack_batch(batch, "data")
        return self.objective(x, y, self.beta() if beta is None else beta)

    def training_step(self, batch: Any, batch_idx: int) -> Optional[torch.Tensor]:
        """One step of ``fit``: the loss (automatic optimization) or, on the joint Rényi path, Pyro's gradients and
        a manual optimizer step (checked as ``fit`` checks it)."""
        self._beta = self.beta()
        if not self.automatic_optimization:
            opt = self.optimizers()
            opt.zero_grad()
            loss, ell = self.loss(batch, self._beta)
            self._loss = loss
            self._check_step()
            opt.step()
        else:
            loss, ell = self.loss(batch, self._beta)
            self._loss = loss
        self._last = unpack_batch(batch, "data")
        value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
        self._sums = [self._sums[0] + value, self._sums[1] + ell, self._sums[2] + 1]
        return loss if self.automatic_optimization else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """``fit``'s check before a step: a non-finite loss or gradient raises :class:`NonFiniteError`."""
        self._check_step()

    def _check_step(self) -> None:
        grads = {n: p.grad for n, p in self.named_parameters()}
        value, bad = first_non_finite(self._loss, grads)
        if bad is not None:
            raise NonFiniteError(
                f"BayesianLightningModule: {bad} is not finite (the loss is {value}) at epoch {self.current_epoch}, "
                f"step {self.global_step}; the step was not taken. Try a smaller learning rate, a KL warm-up "
                "(kl_warmup), gradient clipping (Trainer(gradient_clip_val=...)) or float64",
                epoch=self.current_epoch, step=self.global_step, batch=-1, cause=bad,
            )  # fmt: skip

    # -- the History ------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._sums, self._t0, self._kl = [0.0, 0.0, 0.0], time.perf_counter(), None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """At the epoch's last batch, before Lightning validates: the epoch's KL (the random draws in ``fit``'s
        order: training steps, the KL, then validation)."""
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._kl = self._epoch_kl()

    def on_train_epoch_end(self) -> None:
        """Close the epoch as ``fit`` does: its record (workers averaged), logged and kept in :attr:`history`."""
        losses, ells, nb = self._mean_over_workers(self._sums)
        if nb == 0:
            raise ValueError("data yielded no batches")
        n_train = self.model.dataset_size if isinstance(self.model, BayesianModel) else None
        record: Dict[str, float] = {
            "loss": losses / nb / (n_train or self._last[0].shape[0]),
            "ell": ells / nb,
            "kl": self._kl if self._kl is not None else self._epoch_kl(),
            "beta": self._beta,
        }
        record.update(self._val_scores)
        record["seconds"] = time.perf_counter() - self._t0
        self.log_dict(record)
        self.history.records.append({"epoch": self.current_epoch, **record})

    def _mean_over_workers(self, values: List[float]) -> List[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._last[0].device if self._last else None)
        return self.trainer.strategy.reduce(t, reduce_op="mean").tolist()

    def _epoch_kl(self) -> float:
        """``fit``'s ``kl``: the guide's ``total_kl`` on the fused path, else :func:`~pyro_prune.kl_term` on the
        epoch's last batch."""
        with torch.no_grad():
            if self.objective.fused:
                return float(self.guide.total_kl())
            return kl_term(self.model, self.guide, *self._last)

    # -- validation --------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Draw the ``val_samples``-member posterior-predictive ensemble of the batch (as ``pp.evaluate``)."""
        x, y = unpack_batch(batch, "val_data")
        pred = predict(self.model, self.guide, x, self.val_samples, keep_samples=False)
        if pred.task == "classification":
            self._val.append((pred.probs, y))
        elif pred.task == "regression":
            self._val.append((pred.mean, pred.std, y))
        else:
            raise ValueError("the model has no likelihood to score its outputs with (validation)")

    def on_validation_epoch_end(self) -> None:
        """Score the gathered ensembles (every worker's shard) as :func:`~pyro_prune.evaluate` does."""
        if not self._val:
            return
        parts = [torch.cat(list(col)) for col in zip(*self._val)]
        if self.trainer.world_size > 1:
            parts = [self.all_gather(p).flatten(0, 1) for p in parts]
        if len(parts) == 2:
            scores = classification_metrics(parts[0], parts[1].long())
        else:
            scores = regression_metrics(parts[0], parts[1], parts[2].to(parts[0].dtype))
        scores = {f"val_{k}": v for k, v in scores.items()}
        if not self.trainer.sanity_checking:
            self._val_scores = scores
            self.log_dict(scores)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Keep the :class:`~pyro_prune.History` records in the Lightning checkpoint."""
        checkpoint["pyro_prune_history"] = self.history.to_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if "pyro_prune_history" in checkpoint:
            self.history = History.from_dict(checkpoint["pyro_prune_history"])
