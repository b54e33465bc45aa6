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
and is non-increasing in :math:`\alpha`.  **KL warm-up** multiplies the log densities of every
latent site (prior and guide) by :math:`\beta`, rising linearly from 0 to 1 over ``kl_warmup``
epochs (Sønderby et al. 2016; Molchanov et al. 2017).

``predict`` and ``evaluate`` live in :mod:`pyro_prune.prediction`.

References

[1] Li, Turner. "Rényi Divergence Variational Inference", NeurIPS 2016.
[2] Sønderby et al. "Ladder Variational Autoencoders", NeurIPS 2016 (KL warm-up).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, RenyiELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoGuide
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from ._checks import Batches, as_batches, check_int, check_positive, check_real, unpack_batch
from ._checks.guide import check_guide, model_ref
from .model import BayesianModel
from .model.layers import local_reparameterization
from .model.likelihoods import OBS_SITE
from .prediction import evaluate

__all__ = ["fit", "History", "EarlyStopping", "kl_term"]


# --------------------------------------------------------------------------------------------------
# effect handlers used by fit
# --------------------------------------------------------------------------------------------------
class _LatentScale(Messenger):
    """Multiply the log density of every latent (non-observed) sample site by ``beta``."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and self.beta != 1.0:
            msg["scale"] = self.beta * msg["scale"]


class _ObsRecorder(Messenger):
    """Record the distribution and value of the observed site (for the expected log-likelihood)."""

    def __init__(self):
        super().__init__()
        self.site = None

    def _postprocess_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] == OBS_SITE:
            self.site = (msg["fn"], msg["value"])

    def mean_log_likelihood(self) -> float:
        if self.site is None:
            return float("nan")
        fn, value = self.site
        with torch.no_grad():
            return float(fn.log_prob(value).mean())


def kl_term(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    r""":math:`\mathrm{KL}(q\,\|\,p)` summed over latent sites: analytic where a KL is registered,
    a one-sample Monte Carlo estimate :math:`\log q(w) - \log p(w)` elsewhere."""
    from pyro.distributions.kl import kl_divergence

    with torch.no_grad():
        guide_trace = pyro.poutine.trace(guide).get_trace(x, y)
        model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(x, y)
        total = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or name not in guide_trace.nodes:
                continue
            g = guide_trace.nodes[name]
            try:
                total += float(kl_divergence(g["fn"], site["fn"]).sum())
            except NotImplementedError:
                total += float(g["fn"].log_prob(g["value"]).sum() - site["fn"].log_prob(site["value"]).sum())
        for name, g in guide_trace.nodes.items():  # auxiliary latents of e.g. AutoMultivariateNormal
            if g["type"] == "sample" and name not in model_trace.nodes and g["infer"].get("is_auxiliary"):
                total += float(g["fn"].log_prob(g["value"]).sum())
    return total


# --------------------------------------------------------------------------------------------------
# history and callbacks
# --------------------------------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch training records.

    Each record holds ``epoch``, ``loss`` (objective per training example), ``ell`` (mean
    expected log-likelihood per example), ``kl`` (total KL at the epoch's end), ``beta``,
    ``seconds`` and, with validation data, ``val_<metric>`` entries.
    """

    records: List[Dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> List[float]:
        """The list of one quantity over epochs, e.g. ``history["loss"]``."""
        if not self.records or key not in self.records[-1]:
            raise KeyError(f"no {key!r} in history; have {sorted(self.records[-1]) if self.records else []}")
        return [r.get(key, float("nan")) for r in self.records]

    @property
    def last(self) -> Dict[str, float]:
        return self.records[-1]

    def to_dict(self) -> Dict[str, Any]:
        return {"records": list(self.records), "stopped_early": self.stopped_early}


class EarlyStopping:
    """Callback that stops ``fit`` when ``monitor`` has not improved for ``patience`` epochs.

    :param monitor: record key, e.g. ``"val_nll"`` or ``"loss"``.
    :param patience: epochs without improvement before stopping.
    :param mode: ``"min"`` or ``"max"``.
    """

    def __init__(self, monitor: str = "val_nll", patience: int = 5, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.mode = monitor, check_int("patience", patience, 1), mode
        self.best, self.bad = None, 0

    def __call__(self, epoch: int, record: Dict[str, float], model: Any, guide: Any) -> bool:
        if self.monitor not in record:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, not in the record ({sorted(record)})")
        v = record[self.monitor]
        better = self.best is None or (v < self.best if self.mode == "min" else v > self.best)
        self.best, self.bad = (v, 0) if better else (self.best, self.bad + 1)
        return self.bad >= self.patience


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------
def _make_elbo(model: Any, alpha: float, num_particles: int):
    vectorizable = getattr(model, "vectorizable", True)
    nesting = {"max_plate_nesting": 1} if isinstance(model, BayesianModel) else {}
    vec = num_particles > 1 and vectorizable
    if num_particles > 1 and not vectorizable:
        warnings.warn(
            "model has layers that cannot take sampled weights with sample dims (e.g. BatchNorm): "
            "particles are evaluated one by one, not vectorized",
            stacklevel=3,
        )
    if alpha == 1.0:
        return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=vec, **nesting)
    return RenyiELBO(alpha=alpha, num_particles=num_particles, vectorize_particles=vec, **nesting)


def _fused_kl(model: BayesianModel, guide: Any) -> torch.Tensor:
    if hasattr(guide, "total_kl"):  # guides with hierarchical (group-scale) sites sum their own KL terms
        return guide.total_kl()
    return sum(guide.kl(n, model.prior(n)) for n in model.sites)


def _can_fuse(model: Any, guide: Any, alpha: float, num_particles: int) -> bool:
    """Whether the fused mean-field objective applies (same ELBO as ``TraceMeanField_ELBO``, no traces)."""
    if alpha != 1.0 or num_particles != 1 or not isinstance(model, BayesianModel):
        return False
    has_kl = hasattr(guide, "kl") or hasattr(guide, "total_kl")
    if not (has_kl and hasattr(guide, "fast_params") and guide.uses_local_reparameterization):
        return False
    if any(info.kind == "other" for info in model.sites.values()):
        return False
    try:
        with torch.no_grad():
            _fused_kl(model, guide)
    except NotImplementedError:  # no registered KL for some site: Monte Carlo through Pyro instead
        return False
    return True


def _fused_loss(model: BayesianModel, guide: Any, x: torch.Tensor, y: torch.Tensor, beta: float, check: bool = True):
    r"""The mean-field ELBO of a local-reparameterization guide without Pyro traces.

    :math:`-\frac{N}{B}\sum_b \log p(y_b \mid \mu_b + s_b\varepsilon_b) + \beta\,\mathrm{KL}(q\,\|\,p)`,
    the same estimator ``TraceMeanField_ELBO`` computes on the same model and guide under
    :func:`~pyro_prune.layers.local_reparameterization`; returns ``(loss, mean log-likelihood)``.
    With ``check=False`` the data checks (finite ``x``, valid labels) are skipped: ``fit`` checks every batch
    in the first epoch only.
    """
    if check:
        model._check_x(x)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one row per row of x: x has shape {tuple(x.shape)}, y {tuple(y.shape)}")
    with local_reparameterization(guide, sample_weights=False):
        out = model.run_net(x)
    ll = model.likelihood.log_likelihood(out, y, check=check)
    loss = -ll.sum() * (model.dataset_size / x.shape[0])
    if beta != 0.0:
        loss = loss + beta * _fused_kl(model, guide)
    return loss, float(ll.detach().mean())


def _epoch_kl(model: Any, guide: Any, batch: Tuple[torch.Tensor, torch.Tensor], fused: bool) -> float:
    if fused:
        with torch.no_grad(), pyro.validation_enabled(False):
            return float(_fused_kl(model, guide))
    return kl_term(model, guide, *batch)


def _fused_optimizer(optimizer: pyro.optim.PyroOptim, params: List[torch.Tensor]):
    args = getattr(optimizer, "pt_optim_args", None)
    if isinstance(args, dict):
        ctor = optimizer.pt_optim_constructor
        if "foreach" in inspect.signature(ctor).parameters and "foreach" not in args:
            args = {**args, "foreach": True}  # one multi-tensor update instead of one per parameter
        torch_opt = ctor(params, **args)
        return torch_opt.step
    return lambda: optimizer(params)


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
) -> History:
    r"""Train ``guide`` on ``model`` by stochastic variational inference.

    :param model: a :class:`~pyro_prune.BayesianModel` (or any Pyro model ``model(x, y)``).
    :param guide: a guide for it: ours or Pyro's ``AutoNormal``, ``AutoDelta``, ``AutoMultivariateNormal``...
    :param data: a ``DataLoader`` of ``(x, y)`` batches, or one ``(x, y)`` tuple.
    :param epochs: passes over ``data``.
    :param alpha: Rényi :math:`\alpha`; ``1.0`` is the mean-field ELBO with analytic KLs.
    :param num_particles: samples per step (vectorized when the model allows).
    :param lr: Adam learning rate (ignored when ``optimizer`` is given).
    :param optimizer: a ``pyro.optim`` optimizer.
    :param kl_warmup: epochs over which the KL weight :math:`\beta` ramps linearly from 0 to 1
        (per step); 0 disables warm-up.
    :param kl_weight: final weight :math:`\beta` of the KL term (1: the ELBO; below 1: a tempered posterior that
        trades sparsity for data fit).
    :param val_data: optional validation batches, scored by :func:`evaluate` after each epoch.
    :param callbacks: callables ``cb(epoch, record, model, guide)``; returning ``True`` stops training.
    :param progress: show a tqdm progress bar.
    :param val_samples: ensemble size for validation scores.
    :returns: a :class:`History`.
    """
    check_int("epochs", epochs, 1)
    alpha = check_real("alpha", alpha)
    check_int("num_particles", num_particles, 1)
    check_int("kl_warmup", kl_warmup, 0)
    kl_weight = check_positive("kl_weight", kl_weight)
    check_int("val_samples", val_samples, 1)
    if optimizer is None:
        lr = check_positive("lr", lr)
        optimizer = pyro.optim.Adam({"lr": lr})
    elif not isinstance(optimizer, pyro.optim.PyroOptim):
        raise TypeError(f"optimizer must be a pyro.optim optimizer (e.g. pyro.optim.Adam), got {optimizer!r}")
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    check_guide(model, guide)
    batches = as_batches(data)
    if val_data is not None:
        val_data = as_batches(val_data, "val_data")
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables, got {cb!r}")

    n_data = getattr(getattr(batches, "dataset", None), "__len__", None)
    if isinstance(model, BayesianModel) and n_data is not None and n_data() != model.dataset_size:
        warnings.warn(
            f"the likelihood's dataset_size ({model.dataset_size}) differs from the data loader's dataset "
            f"({n_data()} examples): the log-likelihood is scaled by dataset_size",
            stacklevel=2,
        )
    ref = model_ref(model)
    device = ref.device if ref is not None else None

    if isinstance(guide, AutoGuide) and guide.prototype_trace is None and hasattr(guide, "fast_params"):
        with torch.no_grad():
            guide(*unpack_batch(next(iter(batches)), "data", device))  # create the guide's parameters
    fused = _can_fuse(model, guide, alpha, num_particles)
    scale = _LatentScale(1.0)
    recorder = _ObsRecorder()
    train_model = scale(recorder(model))
    train_guide = scale(guide)
    svi = SVI(train_model, train_guide, optimizer, _make_elbo(model, alpha, num_particles))
    use_lrt = bool(getattr(guide, "uses_local_reparameterization", False))
    if fused:
        params = list({id(p): p for p in [*guide.parameters(), *model.parameters()]}.values())
        fused_step = _fused_optimizer(optimizer, params)

    def train_step(x: torch.Tensor, y: torch.Tensor, check: bool) -> Tuple[float, float]:
        """One optimizer step; returns the loss and the mean log-likelihood of the batch."""
        if fused:
            for p in params:
                p.grad = None
            with pyro.validation_enabled(False):  # the data are checked by _fused_loss in the first epoch
                loss_t, ell = _fused_loss(model, guide, x, y, scale.beta, check=check)
            loss_t.backward()
            fused_step()
            return float(loss_t.detach()), ell
        with local_reparameterization(guide) if use_lrt else contextlib.nullcontext():
            loss = svi.step(x, y)
        return loss, recorder.mean_log_likelihood()

    try:
        steps_per_epoch: Optional[int] = len(batches)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    n_train = model.dataset_size if isinstance(model, BayesianModel) else None

    history = History()
    step = 0
    bar = tqdm(range(epochs), disable=not progress, desc="fit", unit="epoch")
    stack = contextlib.ExitStack()
    if fused:
        stack.enter_context(guide.fast_params())
    with stack:
        for epoch in bar:
            t0 = time.perf_counter()
            if hasattr(model, "train"):
                model.train()
            losses, ells, nb, seen = 0.0, 0.0, 0, 0
            last = None
            for batch in batches:
                x, y = unpack_batch(batch, "data", device)
                ramp = 1.0
                if kl_warmup:
                    ramp = min(1.0, step / (kl_warmup * steps_per_epoch) if steps_per_epoch else epoch / kl_warmup)
                scale.beta = kl_weight * ramp
                loss, ell = train_step(x, y, check=epoch == 0)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at epoch {epoch}, step {step}; try a smaller lr")
                losses += loss
                ells += ell
                nb += 1
                seen += x.shape[0]
                step += 1
                last = (x, y)
            if nb == 0:
                raise ValueError("data yielded no batches")
            n = n_train or seen
            record: Dict[str, float] = {
                "epoch": epoch,
                "loss": losses / nb / n,
                "ell": ells / nb,
                "kl": _epoch_kl(model, guide, last, fused),
                "beta": scale.beta,
            }
            if val_data is not None:
                scores = evaluate(model, guide, val_data, num_samples=val_samples)
                record.update({f"val_{k}": v for k, v in scores.items()})
            record["seconds"] = time.perf_counter() - t0
            history.records.append(record)
            bar.set_postfix(
                {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "kl", "val_accuracy", "val_nll", "val_rmse")}
            )
            stop = False
            for cb in callbacks:
                stop = bool(cb(epoch, record, model, guide)) or stop
            if stop:
                history.stopped_early = True
                break
    bar.close()
    return history
