r"""The capability of a guide to be trained by the fused objective of :func:`pyro_prune.fit`.

A :class:`LocalReparamGuide` is a mean-field Gaussian guide over the weights of a :class:`~pyro_prune.BayesianModel`
that can do two things a generic ``AutoGuide`` cannot:

* give the Gaussian moments :math:`(\mu, \sigma^2)` of each weight site (:meth:`~LocalReparamGuide.
  local_reparam_moments`) -- and, for group-scaled layers, draw the scales :math:`z` per example
  (:meth:`~LocalReparamGuide.local_reparam_group_scale`) -- so that the layers can sample *pre-activations* with
  the local reparameterization trick [1] instead of weights;
* compute :math:`\mathrm{KL}(q\,\|\,p)` of all its sites analytically from its parameters
  (:meth:`~LocalReparamGuide.total_kl`).

With both, ``fit`` (``alpha=1``, one particle) skips Pyro's traces and minimizes directly

.. math::

    \mathcal L(\phi) = -\frac{N}{B}\sum_{b=1}^{B} \log p\big(y_b \mid f(x_b;\, \mu_\phi, \sigma^2_\phi,
    \varepsilon_b)\big) + \beta\,\mathrm{KL}(q_\phi\,\|\,p), \qquad \varepsilon_b \sim \mathcal N(0, I),

where :math:`f` runs the network with every Bayesian layer drawing its output per example, for a Linear layer
:math:`h_b = \mu x_b + \sqrt{\sigma^2 x_b^2}\odot\varepsilon_b` (plus the bias's mean and variance). Each
:math:`h_b` has the distribution it has under a weight sample :math:`w \sim q`, so :math:`\mathcal L` is an unbiased
estimate of the negative mean-field ELBO that ``TraceMeanField_ELBO`` estimates on the same model and guide, with a
smaller variance [1]; :math:`N` is the dataset size, :math:`B` the batch size, :math:`\beta` the KL weight.

The guide's parameters are read once per step, so a guide offers :meth:`~LocalReparamGuide.fast_params`: a context
manager under which :meth:`~LocalReparamGuide._param` returns plain tensors from a snapshot instead of looking them
up through ``PyroModule`` attributes (which ask Pyro's param store). A subclass names its parameters by keys
(:meth:`~LocalReparamGuide._param_keys`) and reads one the slow way (:meth:`~LocalReparamGuide._read_param`).

During a fused ``fit`` the guide's parameters live in a :class:`FlatLayout`: one flat tensor per dtype/device of
which every per-site parameter is a view, one flat gradient buffer, one tensor for the optimizer. A guide whose
KL is a sum over sites with one kind of prior computes it in one call over the flat segments
(:func:`flat_normal_kl`, as :class:`~pyro_prune.AutoSparseVD` does; :meth:`LocalReparamGuide._flat_order` puts
the segments it reads next to each other). ``state_dict`` keys, hooks on the per-site parameters and attribute
access are unchanged; when the run ends each parameter gets its own storage back.

A third-party guide opts into the fused path by subclassing :class:`LocalReparamGuide` and implementing
``total_kl`` and ``local_reparam_moments`` (and, to be fast, ``_param_keys`` / ``_read_param``).

Every guide of the library derives from :class:`DurableGuide`: an ``AutoGuide`` whose parameters stay on the guide
(never in Pyro's global param store, whatever ``module_local_params`` says, :mod:`pyro_prune.model.local_params`),
which keeps its model through ``copy.deepcopy`` and pickle (Pyro's ``AutoGuide`` drops it), and whose
``state_dict`` loads into a freshly constructed guide of the same class (the guide sets itself up from a record of
its inputs' shapes first).  Pyro's own autoguides (``AutoNormal``...) keep Pyro's semantics: their parameters live
in the global store under names fixed by their class (``"AutoNormal.locs.0.weight"``), so two of them of one class
in one process share state -- the second starts from the first's values and the first then reads the second's,
even across ``pyro.clear_param_store()``.  When passing an ``AutoNormal`` to :func:`pyro_prune.fit`, ``predict``,
``prune`` or ``laplace_guide(map_from=...)``, train and use one per process, or set
``pyro.settings.set(module_local_params=True)`` before building it (Pyro's own isolation for its modules).

References

[1] Kingma, Salimans, Welling. "Variational Dropout and the Local Reparameterization Trick", NeurIPS 2015.
[2] Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep Neural Networks", ICML 2017.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer.autoguide import AutoGuide

from ..distributions import ImproperLogUniform, molchanov_kl_sum
from ..model.local_params import LocalParamsMixin, keep_params_local

__all__ = ["DurableGuide", "LocalReparamGuide", "FastParams", "FlatLayout", "flat_normal_kl", "normal_kl"]

#: ``(shape without the batch dimension, dtype name)`` of one positional tensor argument, or ``None``.
ArgSpec = Optional[Tuple[Tuple[int, ...], str]]

_FAST_KEY = "_pp_fast_params"  # the snapshot lives in the instance __dict__, beside nn.Module's bookkeeping
_LAYOUT_KEY = "_pp_flat_layout"  # the FlatLayout of a running fused fit, likewise


class _GuideMeta(type(AutoGuide), abc.ABCMeta):
    """``AutoGuide``'s metaclass with :class:`abc.ABCMeta`, so that abstract methods are enforced."""


class FastParams:
    """Context manager: while active, ``guide._param(key)`` returns the tensor read at entry.

    The snapshot holds the very tensors the guide's ``_read_param`` returns (for unconstrained parameters the
    ``nn.Parameter`` objects of Pyro's param store), so gradients and optimizer updates reach the same storage.
    Nested use restores the outer snapshot on exit.
    """

    def __init__(self, guide: LocalReparamGuide):
        self.guide = guide
        self._outer: Optional[Dict[Hashable, torch.Tensor]] = None

    def __enter__(self) -> Dict[Hashable, torch.Tensor]:
        g = self.guide
        self._outer = g.__dict__.get(_FAST_KEY)
        g.__dict__[_FAST_KEY] = None  # read through the slow path while the snapshot is taken
        snapshot = {key: g._read_param(key) for key in g._param_keys()}
        g.__dict__[_FAST_KEY] = snapshot
        return snapshot

    def __exit__(self, *exc) -> None:
        self.guide.__dict__[_FAST_KEY] = self._outer


class FlatLayout:
    r"""The guide's parameters as views into one flat tensor per ``(dtype, device)``, for one fused ``fit``.

    On construction every parameter of ``params`` (in order) is copied into a flat tensor
    :math:`\phi \in \mathbb R^{P}`; each parameter's ``.data`` becomes the view of its segment and its ``.grad`` the
    view of the same segment of one flat gradient buffer. :attr:`leaves` are ``nn.Parameter`` s over those flat
    tensors (gradient: the flat buffer), so

    * the optimizer holds one tensor per dtype/device (one multi-tensor update over :math:`P` numbers);
    * a guide can compute a term over many sites in one call from :meth:`segment` (a slice of the flat leaf);
      its gradient lands in the same buffer as the per-site parameters' gradients (autograd accumulates into an
      existing ``.grad`` in place);
    * the per-site parameters stay the guide's own ``nn.Parameter`` objects (hooks, ``state_dict`` keys,
      attribute access unchanged).

    :meth:`release` (``fit`` calls it when the run ends, also on errors) gives every parameter its own storage back
    (a copy of its segment) and drops the gradients, so that the guide holds no aliased tensors afterwards.

    :param params: ``[(name, parameter)]``, the order of the flat layout (a guide chooses it so that the segments
        its :meth:`LocalReparamGuide.total_kl` reads are contiguous).
    """

    def __init__(self, params: Sequence[Tuple[str, torch.nn.Parameter]]):
        groups: Dict[Tuple[torch.dtype, torch.device], List[Tuple[str, torch.nn.Parameter]]] = {}
        for name, p in params:
            groups.setdefault((p.dtype, p.device), []).append((name, p))
        self.leaves: Dict[str, torch.nn.Parameter] = {}
        self.params: Dict[str, torch.nn.Parameter] = dict(params)
        self._where: Dict[int, Tuple[str, int, int]] = {}  # id(parameter) -> (leaf name, start, stop)
        #: what guides compute once per layout (e.g. flat prior vectors of :func:`flat_normal_kl`)
        self.cache: Dict[Hashable, Any] = {}
        for i, members in enumerate(groups.values()):
            leaf_name = f"flat{i}"
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(-1) for _, p in members])
            grad = torch.zeros_like(flat)
            start = 0
            for _, p in members:
                stop = start + p.numel()
                p.data = flat[start:stop].view_as(p)
                p.grad = grad[start:stop].view_as(p)
                self._where[id(p)] = (leaf_name, start, stop)
                start = stop
            leaf = torch.nn.Parameter(flat)
            leaf.grad = grad
            self.leaves[leaf_name] = leaf

    def zero_grad(self) -> None:
        """Zero the flat gradient buffers in place (the per-site ``.grad`` views stay attached)."""
        for leaf in self.leaves.values():
            leaf.grad.zero_()

    def segment(self, params: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """The slice of a flat leaf holding ``params`` one after the other (differentiable, gradient into the flat
        buffer), or ``None`` when they are not consecutive in one leaf."""
        where = [self._where.get(id(p)) for p in params]
        if not where or any(w is None for w in where):
            return None
        if any(a[0] != b[0] or a[2] != b[1] for a, b in zip(where, where[1:])):
            return None
        return self.leaves[where[0][0]][where[0][1] : where[-1][2]]

    def locate(self, leaf_name: str) -> Optional[str]:
        """The name of the first parameter whose gradient in leaf ``leaf_name`` is not finite (``None``: all are)."""
        for name, p in self.params.items():
            w = self._where[id(p)]
            if w[0] == leaf_name and not bool(torch.isfinite(p.grad).all()):
                return name
        return None

    def release(self) -> None:
        """Give each parameter its own storage (a copy of its segment) and drop every gradient."""
        with torch.no_grad():
            for p in self.params.values():
                p.data = p.data.clone()
                p.grad = None
        for leaf in self.leaves.values():
            leaf.grad = None
        self._where.clear()
        self.cache.clear()


def _arg_spec(arg: Any) -> ArgSpec:
    if not torch.is_tensor(arg) or arg.dim() == 0:
        return None
    return tuple(int(d) for d in arg.shape[1:]), str(arg.dtype).replace("torch.", "")


def _prepare_for_load(module: DurableGuide, state_dict: Mapping[str, Any], prefix: str, *_) -> None:
    """``load_state_dict`` pre-hook: set a fresh guide up (its parameters then exist) before the tensors load."""
    extra = state_dict.get(prefix + "_extra_state")
    if module.prototype_trace is None and isinstance(extra, Mapping):
        module._restore_structure(extra, state_dict, prefix)


class DurableGuide(LocalParamsMixin, AutoGuide):
    """Base of the library's guides: parameters kept on the guide, the model kept through copies, ``state_dict``
    loadable into a fresh guide (module docstring).

    :param model: the (wrapped) Pyro model, as for ``AutoGuide``.
    :param create_plates: as for ``AutoGuide``.
    """

    def __init__(self, model, *, create_plates=None):
        super().__init__(model, create_plates=create_plates)
        keep_params_local(self)
        self._pp_example: Optional[List[ArgSpec]] = None
        self.register_load_state_dict_pre_hook(_prepare_for_load)

    def _setup_prototype(self, *args, **kwargs):
        self._pp_example = None if kwargs else [_arg_spec(a) for a in args]
        with torch.no_grad():  # the prototype holds no autograd graph (a guide then deep-copies)
            super()._setup_prototype(*args, **kwargs)

    # -- copies ------------------------------------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        model, master = self._model, self.master
        state = dict(super().__getstate__())  # Pyro's AutoGuide drops the model (and the master's weakref)
        self._model, self.master = model, master
        state["_model"] = model
        state["master"] = None
        state.pop(_LAYOUT_KEY, None)  # a copy made during a fused fit owns its parameters (no flat layout)
        return state

    # -- state_dict ----------------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        """What ``state_dict`` holds beyond tensors: the shapes and dtypes of the inputs the guide was set up
        with (to set a fresh guide up before loading)."""
        return {"example": self._pp_example}

    def set_extra_state(self, state: Any) -> None:
        """Nothing to do: the ``load_state_dict`` pre-hook has set the guide up from ``state``."""

    def _restore_structure(self, extra: Mapping[str, Any], state_dict: Mapping[str, Any], prefix: str) -> None:
        """Set this fresh guide up as the one whose ``state_dict`` is loading (default: from the recorded inputs)."""
        self._setup_from_example(extra.get("example"))

    def _setup_from_example(self, spec: Optional[List[ArgSpec]]) -> None:
        """Run :meth:`_setup_prototype` on zero inputs of the recorded shapes (batch 1), the model in eval mode so
        that no BatchNorm statistic moves."""
        if spec is None:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state_dict does not record the inputs the guide was set "
                "up with; call guide(x, y) once on a batch, then load"
            )
        ref = self._model_ref[0] if getattr(self, "_model_ref", None) else None
        device = ref.device if ref is not None else None
        args = [None if s is None else torch.zeros((1,) + tuple(s[0]), dtype=getattr(torch, s[1]), device=device)
                for s in spec]  # fmt: skip
        was = ref.training if ref is not None else None
        if ref is not None:
            ref.eval()
        try:
            with self._pyro_context:
                self._setup_prototype(*args)
        finally:
            if ref is not None:
                ref.train(was)


class LocalReparamGuide(DurableGuide, metaclass=_GuideMeta):
    r"""Base of guides offering local reparameterization and an analytic KL (see the module docstring).

    Subclasses implement :meth:`total_kl` and :meth:`local_reparam_moments`; group-scaled guides also
    :meth:`local_reparam_group_scale`. ``fit`` takes the fused path for (and only for) instances of this class
    whose :attr:`uses_local_reparameterization` is true.
    """

    #: default of :attr:`uses_local_reparameterization`; subclasses set it per instance from their argument
    local_reparameterization: bool = True

    # -- the capability ---------------------------------------------------------------------------------
    @property
    def uses_local_reparameterization(self) -> bool:
        """Whether :func:`~pyro_prune.fit` runs the model's layers with local reparameterization."""
        return self.local_reparameterization

    @abc.abstractmethod
    def total_kl(self) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q\,\|\,p)` summed over every latent site, differentiable in the guide's parameters.

        Raises ``NotImplementedError`` when some site's KL has no closed form (``fit`` then uses Pyro's SVI).
        """

    @abc.abstractmethod
    def local_reparam_moments(self, site: str) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        r"""Mean and variance :math:`(\mu, \sigma^2)` of weight or bias site ``site``, each of the site's shape;
        ``None`` when the layer should use its sampled value instead."""

    def local_reparam_group_scale(self, module: str, batch: int) -> Optional[torch.Tensor]:
        """Group scales :math:`z` of layer ``module`` drawn per example, ``(batch, G)``; ``None`` (the default):
        the guide has no group scales."""
        return None

    # -- fast parameter access ----------------------------------------------------------------------------
    def fast_params(self) -> FastParams:
        """Context manager for tight training loops: :meth:`_param` reads a snapshot of plain tensors."""
        self._require_setup()
        return FastParams(self)

    def flat_layout(self) -> FlatLayout:
        """Put every parameter of the guide into a :class:`FlatLayout` (``fit``'s fused path does, for one run, and
        releases it at the end); :meth:`_flat_order` chooses the order. While it is active, :meth:`active_layout`
        returns it."""
        self._require_setup()
        layout = FlatLayout(self._flat_order())
        self.__dict__[_LAYOUT_KEY] = layout
        return layout

    def release_layout(self) -> None:
        """Release the active :class:`FlatLayout` (a no-op without one)."""
        layout = self.__dict__.pop(_LAYOUT_KEY, None)
        if layout is not None:
            layout.release()

    def active_layout(self) -> Optional[FlatLayout]:
        """The :class:`FlatLayout` of the running fused ``fit``, or ``None``."""
        return self.__dict__.get(_LAYOUT_KEY)

    def _flat_order(self) -> List[Tuple[str, torch.nn.Parameter]]:
        """``[(name, parameter)]`` in the order of the flat layout; default ``named_parameters()``."""
        return list(self.named_parameters())

    def _param_keys(self) -> Iterable[Hashable]:
        """Keys of every parameter :meth:`_param` serves (snapshotted by :meth:`fast_params`); none by default."""
        return ()

    def _read_param(self, key: Hashable) -> torch.Tensor:
        """The parameter tensor named ``key``, looked up the slow way (through ``PyroModule`` attributes)."""
        raise NotImplementedError(f"{type(self).__name__} names no parameters (_read_param)")

    def _param(self, key: Hashable) -> torch.Tensor:
        """The parameter tensor named ``key``: from the :meth:`fast_params` snapshot when one is active."""
        fast = self.__dict__.get(_FAST_KEY)
        if fast is not None:
            return fast[key]
        return self._read_param(key)

    def _require_setup(self) -> None:
        if self.prototype_trace is None:
            raise ValueError("guide is not initialized: fit it first (pp.fit) or call guide(x, y) once")


def _base_distribution(prior: dist.Distribution) -> dist.Distribution:
    while isinstance(prior, torch.distributions.Independent):
        prior = prior.base_dist
    return prior


def _prior_kind(prior: dist.Distribution) -> Optional[str]:
    base = _base_distribution(prior)
    if type(base) in (dist.Normal, torch.distributions.Normal):
        return "normal"
    return "log_uniform" if type(base) is ImproperLogUniform else None


def _flat_kl_plan(priors: Sequence[dist.Distribution], shapes: Sequence[torch.Size]) -> Any:
    """What :func:`flat_normal_kl` needs of the priors: ``("log_uniform",)``, ``("normal", m, 1/(2 s^2), const)``
    with flat prior vectors, or ``None`` (mixed or other priors)."""
    kinds = {_prior_kind(p) for p in priors}
    if len(kinds) != 1 or None in kinds:
        return None
    if kinds == {"log_uniform"}:
        return ("log_uniform",)
    bases = [_base_distribution(p) for p in priors]
    m = torch.cat([b.loc.broadcast_to(s).reshape(-1) for b, s in zip(bases, shapes)])
    scale = torch.cat([b.scale.broadcast_to(s).reshape(-1) for b, s in zip(bases, shapes)])
    const = scale.log().sum() - 0.5 * scale.numel()
    return ("normal", m, 0.5 / scale.pow(2), const)


def flat_normal_kl(
    layout: FlatLayout,
    locs: Sequence[torch.Tensor],
    log_sigma2s: Sequence[torch.Tensor],
    priors: Callable[[], Sequence[dist.Distribution]],
) -> Optional[torch.Tensor]:
    r""":math:`\sum_{\text{sites}} \mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,p)` in one call over flat segments of
    ``layout``, or ``None`` when that is not possible (then sum :func:`normal_kl` per site).

    Possible when ``locs`` and ``log_sigma2s`` (the sites' parameters, in one order) each lie consecutively in one
    leaf of the layout and the priors are all the improper log-uniform (one :func:`molchanov_kl_sum`) or all
    Gaussian (the closed form over flat vectors of prior means and variances, built once per layout). Equal to the
    per-site sum in value and gradient (tested).

    :param priors: called (once per layout) for the sites' priors, in the order of ``locs``.
    """
    loc, log_sigma2 = layout.segment(locs), layout.segment(log_sigma2s)
    if loc is None or log_sigma2 is None:
        return None
    key = ("normal_kl", tuple(id(p) for p in locs))
    if key not in layout.cache:
        layout.cache[key] = _flat_kl_plan(priors(), [p.shape for p in locs])
    plan = layout.cache[key]
    if plan is None:
        return None
    if plan[0] == "log_uniform":
        return molchanov_kl_sum(loc, log_sigma2)
    _, m, inv_2var, const = plan
    return const - 0.5 * log_sigma2.sum() + ((log_sigma2.exp() + (loc - m).pow(2)) * inv_2var).sum()


def normal_kl(
    loc: torch.Tensor, log_sigma2: torch.Tensor, prior: dist.Distribution, event_dim: Optional[int] = None
) -> torch.Tensor:
    r""":math:`\sum_i \mathrm{KL}(\mathcal N(\mu_i, \sigma_i^2)\,\|\,p)` over all elements of ``loc`` (any shape).

    For a Gaussian prior :math:`\mathcal N(m, s^2)` the closed form
    :math:`\log\frac{s}{\sigma} + \frac{\sigma^2 + (\mu - m)^2}{2 s^2} - \frac12`; for the improper log-uniform
    prior the approximation of [2] (:func:`~pyro_prune.distributions.molchanov_kl_sum`); otherwise the registered
    KL of ``Normal(loc, σ).to_event(event_dim)`` against ``prior`` (``NotImplementedError`` if none is;
    ``event_dim`` defaults to ``loc.dim()`` and must match the prior's, as torch's KL of ``Independent`` pairs needs).
    All three equal the registered KLs (tested); the first two skip building distributions.
    """
    base = _base_distribution(prior)
    if type(base) in (dist.Normal, torch.distributions.Normal):
        var0 = base.scale.pow(2)
        kl = base.scale.log() - 0.5 * log_sigma2 + (log_sigma2.exp() + (loc - base.loc).pow(2)) / (2 * var0) - 0.5
        return kl.sum()
    if type(base) is ImproperLogUniform:
        return molchanov_kl_sum(loc, log_sigma2)
    q = dist.Normal(loc, (0.5 * log_sigma2).exp()).to_event(loc.dim() if event_dim is None else event_dim)
    return kl_divergence(q, prior).sum()
