r"""Training: ``fit`` a guide to a model with the (Rényi) ELBO, with KL warm-up and an optional fused path.

**Objective.** With :math:`\alpha = 1`, ``fit`` maximizes the mean-field ELBO with analytic KL
terms wherever a KL is registered (``pyro.infer.TraceMeanField_ELBO``; Monte Carlo otherwise):

.. math::

    \mathcal L_1 = \frac{N}{B}\sum_{b} \mathbb E_q[\log p(y_b \mid x_b, w)] - \beta\,\mathrm{KL}(q \,\|\, p).

For any other :math:`\alpha` it maximizes the Rényi variational bound [1] with :math:`K`
vectorized reparameterized samples (``pyro.infer.RenyiELBO``):

.. math::

    \mathcal L_\alpha = \frac{1}{1-\alpha} \log \frac{1}{K}\sum_{k=1}^K
    \left[\frac{p(y, w_k \mid x)}{q(w_k)}\right]^{1-\alpha}, \qquad w_k \sim q,

which is the IWAE bound at :math:`\alpha = 0`, tends to the ELBO as :math:`\alpha \to 1`
and is non-increasing in :math:`\alpha`. It evaluates the prior density at sampled weights, so ``fit`` refuses it
for the improper log-uniform priors (infinite density at :math:`w = 0`, where pruned weights collapse);
``alpha_on="likelihood"`` instead applies the power to each example's likelihood and keeps the KL in closed form
(Li & Gal 2017; :mod:`pyro_prune.fused`), for :class:`~pyro_prune.guides.LocalReparamGuide`\ s.

**KL warm-up** multiplies the log densities of every
latent site (prior and guide) by :math:`\beta`, rising linearly from 0 to 1 over ``kl_warmup``
epochs (Sønderby et al. 2016; Molchanov et al. 2017).

**Paths.** A :class:`~pyro_prune.guides.LocalReparamGuide` (``AutoSparseVD``, ``AutoGroupSparse``) with local
reparameterization on, at :math:`\alpha = 1` with one particle, is trained by the fused objective of
:mod:`pyro_prune.fused` (the same ELBO estimator without Pyro's traces); every other guide goes through Pyro's
``SVI``, a ``LocalReparamGuide`` still under :func:`~pyro_prune.layers.local_reparameterization`.

**Stages.** ``fit`` checks its arguments into a ``_FitPlan``, builds a ``_Trainer`` (guide initialization,
objective, optimizer), then runs epochs (``_Trainer.train_epoch``) and closes each with validation, history and
callbacks (``_Trainer.end_epoch``). On the SVI path a step is ``pyro.infer.SVI.step`` spelled out (the ELBO's
``loss_and_grads`` under a param-capturing trace, then ``pyro.optim``'s step), so that it can be checked in between.

**Faults and resume** (:mod:`pyro_prune.training`). Every batch of every epoch passes the data checks; the loss
and gradients are checked *before* each optimizer step (:class:`~pyro_prune.training.NonFiniteError`, the step
not taken); every exception leaves ``fit`` with ``err.history``; ``History.state`` (a
:class:`~pyro_prune.training.TrainingState`) continues the run exactly through ``fit(..., resume=history)``.

``predict`` and ``evaluate`` live in :mod:`pyro_prune.prediction`.

References

[1] Li, Turner. "Rényi Divergence Variational Inference", NeurIPS 2016.
[2] Sønderby et al. "Ladder Variational Autoencoders", NeurIPS 2016 (KL warm-up).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pyro
import pyro.optim
import torch
from pyro.infer.util import zero_grads
from tqdm.auto import tqdm

from ._checks import Batches, as_batches, check_choice, check_int, check_positive, check_real, unpack_batch
from ._checks.guide import check_guide, model_ref
from .fused import FlatParameters, fused_loss, fused_optimizer, takes_fused_path
from .guides.base import LocalReparamGuide
from .handlers import LatentScale, ObsRecorder, kl_term
from .model import BayesianModel
from .model.layers import local_reparameterization
from .objectives import ALPHA_ON, check_joint_renyi, make_elbo
from .prediction import evaluate
from .training import (
    EarlyStopping,
    History,
    NonFiniteError,
    PerParamOptimizer,
    RunCallback,
    TrainingState,
    first_non_finite,
    leaf_parameter,
    numerical_rejection,
    parameter_shapes,
)

__all__ = ["fit", "History", "EarlyStopping", "kl_term", "NonFiniteError", "TrainingState"]


# --------------------------------------------------------------------------------------------------
# fit, stage 1: arguments
# --------------------------------------------------------------------------------------------------
@dataclass
class _FitPlan:
    """The arguments of :func:`fit`, checked and normalized on construction (same order, same errors)."""

    model: Callable
    guide: Callable
    data: Batches
    epochs: int
    alpha: float
    num_particles: int
    lr: float
    optimizer: Optional[pyro.optim.PyroOptim]
    kl_warmup: int
    kl_weight: float
    val_data: Optional[Batches]
    callbacks: Sequence[Callable]
    progress: bool
    val_samples: int
    resume: Union[History, TrainingState, None] = None
    alpha_on: str = "joint"

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1)
        self.alpha = check_real("alpha", self.alpha)
        check_int("num_particles", self.num_particles, 1)
        self.alpha_on = check_choice("alpha_on", self.alpha_on, ALPHA_ON)
        check_int("kl_warmup", self.kl_warmup, 0)
        self.kl_weight = check_positive("kl_weight", self.kl_weight)
        check_int("val_samples", self.val_samples, 1)
        if self.optimizer is None:
            self.optimizer = pyro.optim.Adam({"lr": check_positive("lr", self.lr)})
        elif not isinstance(self.optimizer, pyro.optim.PyroOptim):
            raise TypeError(f"optimizer must be a pyro.optim optimizer (e.g. pyro.optim.Adam), got {self.optimizer!r}")
        if not callable(self.model):
            raise TypeError(f"model must be callable, got {type(self.model).__name__}")
        check_guide(self.model, self.guide)
        check_joint_renyi(self.model, self.alpha, self.alpha_on)
        self.data = as_batches(self.data)
        if self.val_data is not None:
            self.val_data = as_batches(self.val_data, "val_data")
        for cb in self.callbacks:
            if not (callable(cb) or isinstance(cb, RunCallback)):
                raise TypeError(f"callbacks must be callables or RunCallback objects, got {cb!r}")
        self._warn_dataset_size()
        self._check_resume()

    def _check_resume(self) -> None:
        """Normalize ``resume`` into :attr:`resume_state` and :attr:`resume_records`."""
        self.resume_state: Optional[TrainingState] = None
        self.resume_records: List[Dict[str, float]] = []
        if self.resume is None:
            return
        if isinstance(self.resume, History):
            if self.resume.state is None:
                raise ValueError("resume: this History holds no training state (pass the History fit returned)")
            self.resume_records = [dict(r) for r in self.resume.records]
            self.resume_state = self.resume.state
        elif isinstance(self.resume, TrainingState):
            self.resume_state = self.resume
        else:
            raise TypeError(f"resume must be a History or a TrainingState, got {type(self.resume).__name__}")
        state = self.resume_state
        if (state.kl_warmup, state.kl_weight) != (self.kl_warmup, self.kl_weight):
            warnings.warn(
                f"resume: kl_warmup={self.kl_warmup}, kl_weight={self.kl_weight} differ from the resumed run's "
                f"({state.kl_warmup}, {state.kl_weight}); the warm-up continues from step {state.step} with the "
                "new values",
                stacklevel=5,  # _check_resume < __post_init__ < __init__ < fit < the caller
            )

    def _warn_dataset_size(self) -> None:
        n_data = getattr(getattr(self.data, "dataset", None), "__len__", None)
        sizes = (0, getattr(self.model, "dataset_size", None))  # an empty dataset fails later: no batches
        if isinstance(self.model, BayesianModel) and n_data is not None and n_data() not in sizes:
            warnings.warn(
                f"the likelihood's dataset_size ({self.model.dataset_size}) differs from the data loader's dataset "
                f"({n_data()} examples): the log-likelihood is scaled by dataset_size",
                stacklevel=5,  # _warn_dataset_size < __post_init__ < __init__ < fit < the caller
            )

    @property
    def steps_per_epoch(self) -> Optional[int]:
        """Batches per epoch when ``data`` has a length (warm-up then ramps per step), else ``None``."""
        try:
            return len(self.data)  # type: ignore[arg-type]
        except TypeError:
            return None


# --------------------------------------------------------------------------------------------------
# fit, stage 2: objective and optimizer
# --------------------------------------------------------------------------------------------------
class _Trainer:
    """The optimization state of one :func:`fit` call: objective (fused or SVI), optimizer, KL weight, step count,
    history, and what a fault or a resume needs.

    :ivar fused: whether the fused objective of :mod:`pyro_prune.fused` is used (else Pyro's ELBO, stepped as
        ``pyro.infer.SVI.step`` steps it, with the checks before the step).
    :ivar scale: the effect handler carrying the current KL weight :math:`\\beta`.
    :ivar named: ``{name: parameter}`` of every parameter optimized (on the SVI path: captured from the steps'
        traces, so only known after the first step).
    :ivar saved: ``(epoch, step, parameters, optimizer state)`` at the epoch's first step, restored when an update
        overflowed (the only way the parameters can become non-finite, since each step is checked before it is
        taken).
    """

    def __init__(self, plan: _FitPlan):
        self.plan = plan
        model, guide = plan.model, plan.guide
        ref = model_ref(model)
        self.device = ref.device if ref is not None else None
        if isinstance(guide, LocalReparamGuide) and guide.prototype_trace is None:
            first = next(iter(plan.data), None)
            if first is None:
                raise ValueError("data yielded no batches")
            with torch.no_grad():
                guide(*unpack_batch(first, "data", self.device))  # create the guide's parameters
        self.fused = takes_fused_path(model, guide, plan.alpha, plan.num_particles, plan.alpha_on)
        self.scale = LatentScale(1.0)
        self.recorder = ObsRecorder()
        self.flat: Optional[FlatParameters] = None
        if self.fused:
            self.flat = FlatParameters(guide, model)  # released at the end of run() (or below, if setting up fails)
            self.named = self.flat.named
        else:
            self.named: Dict[str, torch.Tensor] = {}
            self.optimizer = PerParamOptimizer(plan.optimizer)
            self.elbo = make_elbo(model, plan.alpha, plan.num_particles, stacklevel=3)  # < _Trainer < fit < caller
            self.model_fn, self.guide_fn = self.scale(self.recorder(model)), self.scale(guide)
            self.use_lrt = isinstance(guide, LocalReparamGuide) and guide.uses_local_reparameterization
        self.steps_per_epoch = plan.steps_per_epoch
        self.n_train = model.dataset_size if isinstance(model, BayesianModel) else None
        state = plan.resume_state
        self.epochs_done, self.step = (state.epoch, state.step) if state is not None else (0, 0)
        self.pending = state  # loaded once the parameters are known: now (fused) or at the first step (SVI)
        self.saved: Optional[Tuple[int, int, Dict[str, torch.Tensor], Dict[str, Any]]] = None
        self.history = History(records=list(plan.resume_records))
        if self.fused:
            try:
                self.optimizer = fused_optimizer(plan.optimizer, self.named)
                self.load_pending()
            except BaseException:
                self.flat.release()
                raise

    @property
    def path(self) -> str:
        return "fused" if self.fused else "svi"

    def fast_params(self) -> contextlib.AbstractContextManager:
        """The guide's :meth:`~pyro_prune.guides.LocalReparamGuide.fast_params` on the fused path."""
        return self.plan.guide.fast_params() if self.fused else contextlib.nullcontext()

    # -- the training state: resume, snapshot, restore ------------------------------------------------
    def load_pending(self) -> None:
        """Check the resumed state against the parameters and load its optimizer state (once)."""
        state, self.pending = self.pending, None
        if state is not None:
            state.check_compatible(self.path, self.plan.guide, parameter_shapes(self.named))
            self.optimizer.load_state_dict(state.optimizer, self.named)

    def training_state(self) -> TrainingState:
        """Where the run stands now (tensors cloned): epochs done, steps taken, optimizer state by name."""
        if self.pending is not None:  # resumed, nothing stepped yet: the resumed state is still the run's
            return TrainingState.from_dict(self.pending.to_dict())
        return TrainingState(
            epoch=self.epochs_done,
            step=self.step,
            path=self.path,
            guide=type(self.plan.guide).__name__,
            shapes=parameter_shapes(self.named),
            optimizer=self.optimizer.state_dict(self.named),
            kl_warmup=self.plan.kl_warmup,
            kl_weight=self.plan.kl_weight,
        )

    def keep_epoch_start(self, epoch: int) -> None:
        """Keep the parameters and optimizer state at the epoch's first step (see :attr:`saved`)."""
        if self.saved is None or self.saved[0] != epoch:
            params = {n: p.detach().clone() for n, p in self.named.items()}
            self.saved = (epoch, self.step, params, self.optimizer.state_dict(self.named))

    def restore_epoch_start(self) -> str:
        """Restore :attr:`saved`; returns the sentence the error message gives about the parameters."""
        if self.saved is None:
            return "The parameters are not finite (an update overflowed) and no earlier state was kept."
        epoch, self.step, params, opt = self.saved
        with torch.no_grad():
            for n, p in self.named.items():
                if n in params:
                    p.copy_(params[n])  # in place: the fast-params snapshot and Pyro's param store see it
        self.optimizer.load_state_dict(opt, self.named)
        return (
            "An earlier update overflowed (the parameters were not finite): the parameters and optimizer state of "
            f"the start of epoch {epoch} are restored."
        )

    def abort(self, err: BaseException) -> None:
        """On any exception: drop gradients, record the state of the last step taken, attach ``err.history``."""
        for p in self.named.values():
            p.grad = None
        try:
            self.history.state = self.training_state()
        except Exception as e:  # never hide the original error behind one from the snapshot
            warnings.warn(f"fit could not record the training state after {type(err).__name__}: {e}", stacklevel=3)
        err.history = self.history  # type: ignore[attr-defined]

    # -- stage 3: one epoch ---------------------------------------------------------------------------
    def fused_grads(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, float, Dict[str, torch.Tensor]]:
        """Loss and gradients of the fused objective; returns ``(loss, mean log-likelihood, parameters)``."""
        self.flat.zero_grads()
        with pyro.validation_enabled(False):  # the data are checked by fused_loss
            plan = self.plan
            loss, ell = fused_loss(plan.model, plan.guide, x, y, self.scale.beta, True, plan.alpha, plan.num_particles)
        loss.backward()
        return loss, ell, self.named

    def svi_grads(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[Any, float, Dict[str, torch.Tensor]]:
        """Loss and gradients as ``pyro.infer.SVI.step`` computes them (``loss_and_grads`` under a param-capturing
        trace); returns ``(loss, mean log-likelihood, {param site: unconstrained parameter})``."""
        with local_reparameterization(self.plan.guide) if self.use_lrt else contextlib.nullcontext():
            with pyro.poutine.trace(param_only=True) as capture:
                loss = self.elbo.loss_and_grads(self.model_fn, self.guide_fn, x, y)
        named = {name: leaf_parameter(site["value"]) for name, site in capture.trace.nodes.items()}
        self.named.update(named)
        return loss, self.recorder.mean_log_likelihood(), named

    def grads(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[Any, float, Dict[str, torch.Tensor]]:
        """Loss and gradients of the step's objective: ``(loss, mean log-likelihood, {name: parameter})``."""
        return self.fused_grads(x, y) if self.fused else self.svi_grads(x, y)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, index: int) -> Tuple[float, float]:
        """One optimizer step, taken only when the loss and every gradient are finite (else
        :class:`NonFiniteError`); returns the loss and the mean log-likelihood of the batch."""
        try:
            loss, ell, named = self.grads(x, y)
        except ValueError as e:  # the data checks (ours, before any distribution is built), or Pyro's validation
            invalid = numerical_rejection(e)
            if invalid is None:
                raise ValueError(f"data batch {index} of epoch {epoch}: {e}") from e
            raise self.fault(invalid, epoch, index, x) from e
        if self.pending is not None:
            self.load_pending()
        rename = self.flat.gradient_name if self.flat is not None else None
        value, bad = first_non_finite(loss, {n: p.grad for n, p in named.items()}, rename)
        if bad is not None:
            what = f"the loss is {value}" if bad == "the loss" else f"{bad} is not finite (the loss is {value})"
            raise self.fault(what, epoch, index, x)
        self.keep_epoch_start(epoch)
        self.optimizer.step(named)
        if not self.fused:
            zero_grads(set(named.values()))  # as pyro.infer.SVI.step
        return value, ell

    def fault(self, what: str, epoch: int, index: int, x: torch.Tensor) -> NonFiniteError:
        """The error for a step where ``what`` is not finite (the parameters restored if they are not)."""
        step = self.step
        for p in self.named.values():
            p.grad = None
        state = "The step was not taken: the parameters and optimizer state are those before it."
        if not all(bool(torch.isfinite(p).all()) for p in self.named.values()):
            state = self.restore_epoch_start()
        tips = []
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            tips.append("check the data: the inputs x of this batch contain NaN or inf")
        lr = self.optimizer.lr()
        lr = "" if lr is None else f" (now {lr:g})"
        tips += [f"a smaller learning rate{lr}", "a KL warm-up (kl_warmup)", "gradient clipping (ClippedAdam)"]
        tips.append("float64 (model.to(torch.float64))")
        message = (
            f"fit: {what} at epoch {epoch}, step {step} (input batch {index} of the epoch). {state} "
            f"Try {', '.join(tips)}. The History so far is err.history (fit(..., resume=err.history) continues with "
            "the same optimizer settings; a new fit takes a new learning rate)."
        )
        return NonFiniteError(message, epoch=epoch, step=step, batch=index, cause=what)

    def kl_ramp(self, epoch: int) -> float:
        """Warm-up factor in [0, 1] of the KL weight at the current step (per step when the epoch length is known)."""
        warmup, steps = self.plan.kl_warmup, self.steps_per_epoch
        if not warmup:
            return 1.0
        return min(1.0, self.step / (warmup * steps) if steps else epoch / warmup)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the data; returns the epoch's record without validation scores and timing."""
        if isinstance(self.plan.model, torch.nn.Module):
            self.plan.model.train()
        losses, ells, nb, seen, last = 0.0, 0.0, 0, 0, None
        for index, batch in enumerate(self.plan.data):
            x, y = unpack_batch(batch, "data", self.device)
            self.scale.beta = self.plan.kl_weight * self.kl_ramp(epoch)
            loss, ell = self.train_step(x, y, epoch, index)
            losses, ells, nb, seen, last = losses + loss, ells + ell, nb + 1, seen + x.shape[0], (x, y)
            self.step += 1
        if nb == 0:
            raise ValueError("data yielded no batches")
        return {
            "epoch": epoch,
            "loss": losses / nb / (self.n_train or seen),
            "ell": ells / nb,
            "kl": self.epoch_kl(last),
            "beta": self.scale.beta,
        }

    def epoch_kl(self, batch: Tuple[torch.Tensor, torch.Tensor]) -> float:
        """:math:`\\mathrm{KL}(q\\,\\|\\,p)` at the epoch's end: the guide's ``total_kl`` on the fused path, else
        :func:`kl_term` on the last batch."""
        if self.fused:
            with torch.no_grad(), pyro.validation_enabled(False):
                return float(self.plan.guide.total_kl())
        return kl_term(self.plan.model, self.plan.guide, *batch)

    # -- stage 4: validation, history, callbacks ------------------------------------------------------
    def end_epoch(self, record: Dict[str, float], t0: float, bar: Any) -> bool:
        """Score the validation data, store the record and the training state, update the bar; returns whether a
        callback stops training."""
        plan = self.plan
        if plan.val_data is not None:
            scores = evaluate(plan.model, plan.guide, plan.val_data, num_samples=plan.val_samples)
            record.update({f"val_{k}": v for k, v in scores.items()})
        record["seconds"] = time.perf_counter() - t0
        self.history.records.append(record)
        self.epochs_done = record["epoch"] + 1
        self.history.state = self.training_state()
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in _BAR_KEYS})
        stop = False
        for cb in plan.callbacks:
            if isinstance(cb, RunCallback):
                stop = bool(cb.on_epoch_end(self.history, plan.model, plan.guide)) or stop
            else:
                stop = bool(cb(record["epoch"], record, plan.model, plan.guide)) or stop
        self.history.stopped_early = stop
        return stop

    def run(self) -> History:
        """All epochs (until a callback stops them); returns the :class:`History`. Any exception leaves with
        ``err.history`` (see :meth:`abort`)."""
        start = self.epochs_done
        bar = tqdm(range(start, start + self.plan.epochs), disable=not self.plan.progress, desc="fit", unit="epoch")
        try:
            with self.fast_params():
                for epoch in bar:
                    t0 = time.perf_counter()
                    if self.end_epoch(self.train_epoch(epoch), t0, bar):
                        break
        except BaseException as err:
            self.abort(err)
            raise
        finally:
            bar.close()
            if self.flat is not None:
                self.flat.release()  # each guide parameter its own storage again
        return self.history


_BAR_KEYS = ("loss", "kl", "val_accuracy", "val_nll", "val_rmse")


def fit(
    model: Callable,
    guide: Callable,
    data: Batches,
    epochs: int,
    alpha: float = 1.0,
    num_particles: int = 1,
    lr: float = 1e-3,
    optimizer: Optional[pyro.optim.PyroOptim] = None,
    kl_warmup: int = 0,
    kl_weight: float = 1.0,
    val_data: Optional[Batches] = None,
    callbacks: Sequence[Callable] = (),
    progress: bool = True,
    val_samples: int = 20,
    resume: Union[History, TrainingState, None] = None,
    alpha_on: str = "joint",
) -> History:
    r"""Train ``guide`` on ``model`` by stochastic variational inference.

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model ``model(x, y)``).
    :param guide: a guide for it: ours or Pyro's ``AutoNormal``, ``AutoDelta``, ``AutoMultivariateNormal``...
    :param data: a ``DataLoader`` of ``(x, y)`` batches, or one ``(x, y)`` tuple.
    :param epochs: passes over ``data``.
    :param alpha: Rényi :math:`\alpha`; ``1.0`` is the mean-field ELBO with analytic KLs.
    :param alpha_on: where :math:`\alpha \ne 1` applies: ``"joint"`` (Pyro's ``RenyiELBO`` on
        :math:`p(y, w)/q(w)`, a bound on the evidence; refused for improper priors) or ``"likelihood"`` (the power on
        each example's likelihood, the KL in closed form: Li & Gal 2017, see :mod:`pyro_prune.fused`; for
        ``LocalReparamGuide``\ s such as ``AutoSparseVD``).
    :param num_particles: samples per step (vectorized when the model allows).
    :param lr: Adam learning rate (ignored when ``optimizer`` is given).
    :param optimizer: a ``pyro.optim`` optimizer.
    :param kl_warmup: epochs over which the KL weight :math:`\beta` ramps linearly from 0 to 1
        (per step); 0 disables warm-up.
    :param kl_weight: final weight :math:`\beta` of the KL term (1: the ELBO; below 1: a tempered posterior that
        trades sparsity for data fit).
    :param val_data: optional validation batches, scored by :func:`evaluate` after each epoch.
    :param callbacks: callables ``cb(epoch, record, model, guide)``, or :class:`~pyro_prune.training.RunCallback`
        objects (``on_epoch_end(history, model, guide)``, e.g. :class:`pyro_prune.io.Checkpoint`); returning
        ``True`` stops training.
    :param progress: show a tqdm progress bar.
    :param val_samples: ensemble size for validation scores.
    :param resume: continue a run: the :class:`History` a previous ``fit`` returned (or raised as ``err.history``)
        or its :class:`~pyro_prune.training.TrainingState` (``history.state``). The optimizer state (the fused
        path's torch optimizer and ``pyro.optim``'s per-parameter ones alike), the step count (the KL warm-up
        position) and the epoch count carry over, so ``fit(epochs=2)`` then ``fit(epochs=2, resume=h)`` equals
        ``fit(epochs=4)`` bit for bit with the same arguments, seed and data order; ``epochs`` counts the epochs
        to add. The optimizer's hyperparameters are the state's (as ``torch.optim.Optimizer.load_state_dict``
        restores them). The parameters themselves are the guide's and model's: resume with the same objects or
        ones loaded from the same run.
    :returns: a :class:`History`; ``history.state`` resumes the run.
    :raises NonFiniteError: a step's loss or gradient is NaN or infinite; raised before the step, which is not
        taken (a ``FloatingPointError``).
    :raises ValueError: a batch fails the data checks (NaN or inf inputs, labels outside the classes, ...), in any
        epoch; the message names the batch and epoch. Also: ``data`` yields no batches; ``resume`` belongs to
        another guide class, model (parameter names or shapes) or training path.

    **Faults.** Every exception leaving ``fit``, ``KeyboardInterrupt`` included, carries the History so far as
    ``err.history`` (with ``err.history.state``: the run after its last step taken) and leaves the model and guide
    usable, with the parameters of the last step taken (finite).
    """
    plan = _FitPlan(
        model, guide, data, epochs, alpha, num_particles, lr, optimizer, kl_warmup, kl_weight, val_data, callbacks,
        progress, val_samples, resume, alpha_on,
    )  # fmt: skip
    return _Trainer(plan).run()
