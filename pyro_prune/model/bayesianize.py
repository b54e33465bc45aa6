r"""``bayesianize``: turn an ``nn.Module`` into a Pyro model whose weights are sample sites.

Every weight and bias of ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` becomes a
``PyroSample`` site named like the parameter (``"0.weight"``, ``"fc1.bias"``), with prior
:math:`p(w)`, and the model observes :math:`y` through a likelihood head:

.. math::

    p(y, w \mid x) = p(w) \prod_{n} p(y_n \mid f_w(x_n)).

Those layers are replaced by :mod:`pyro_prune.layers`-backed versions that accept sampled
weights with leading sample dimensions (vectorized particles, parallel ``Predictive``)
and the local reparameterization path.  Normalization layers and embeddings keep their
parameters as point estimates (Pyro params), unless a prior callable or dict gives them a
prior.  Other modules that hold parameters raise, or become point estimates with
``unsupported="point"``.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Literal, Mapping, Optional, Union

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from . import layers
from .group_prior import GroupInfo, GroupPrior, conditional_weight_prior
from .likelihoods import Likelihood

__all__ = [
    "bayesianize",
    "BayesianModel",
    "SiteInfo",
    "BayesianLinear",
    "BayesianConv1d",
    "BayesianConv2d",
    "init_from",
    "PriorSpec",
]

PriorFn = Callable[[str, nn.Module, torch.Tensor], Optional[dist.Distribution]]
PriorSpec = Union[dist.Distribution, PriorFn, Mapping[str, Optional[dist.Distribution]], GroupPrior]

#: Modules whose parameters stay point estimates by default.
POINT_ESTIMATE_MODULES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
)

#: Point-estimate modules that cannot take inputs with leading sample dimensions.
_BATCH_FIRST_MODULES = (nn.modules.batchnorm._NormBase, nn.GroupNorm)

#: Parameter-free modules that expect ``(B, C, ...)`` inputs: under sample dimensions their input is folded to
#: ``(S·B, C, ...)`` and their output unfolded back to ``S + (B, ...)`` (forward hooks set by ``bayesianize``).
FOLDED_MODULES = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)


class _SampleDims:
    """Number of leading sample dimensions of the activations in the current forward pass (0: none)."""

    k = 0


def _note_sample_dims(k: int) -> None:
    if k > _SampleDims.k:
        _SampleDims.k = k


def _fold_pre_hook(module: nn.Module, args):
    k = _SampleDims.k
    x = args[0]
    if k == 0 or not torch.is_tensor(x) or x.dim() <= k + 1:
        module._pp_folded = None
        return None
    module._pp_folded = x.shape[: k + 1]
    return (x.reshape((-1,) + x.shape[k + 1 :]),) + tuple(args[1:])


def _fold_hook(module: nn.Module, args, out):
    lead = getattr(module, "_pp_folded", None)
    if lead is None:
        return None
    module._pp_folded = None
    return out.reshape(lead + out.shape[1:])


@dataclass(frozen=True)
class SiteInfo:
    """What a weight sample site is.

    :ivar name: site name, the parameter's name in the network (``"0.weight"``).
    :ivar module: dotted path of the owning module (``"0"``).
    :ivar param: ``"weight"`` or ``"bias"`` (or another parameter name).
    :ivar kind: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"other"``.
    :ivar shape: parameter shape.
    :ivar fan_in: inputs per output unit (``in_features`` or ``in_channels/groups · prod(kernel)``).
    :ivar fan_out: output units (``out_features`` / ``out_channels``).
    :ivar out_axis: axis of the parameter indexing output units (0 for weights and biases).
    """

    name: str
    module: str
    param: str
    kind: str
    shape: torch.Size
    fan_in: int
    fan_out: int
    out_axis: int = 0

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


class _SitePrior:
    """PyroSample prior callable: the layer's prior for one parameter, cast to its dtype/device."""

    def __init__(self, param: str):
        self.param = param

    def __call__(self, module: nn.Module) -> dist.Distribution:
        return module._pp_prior(self.param)


class _BayesianLayer:
    """Mixin for Bayesian layers: priors per parameter, dtype/device tracking, site names."""

    kind = "other"

    def _pp_init(
        self,
        priors: Dict[str, dist.Distribution],
        ref: torch.Tensor,
        names: Dict[str, str],
        group: Optional[tuple] = None,
    ) -> None:
        self._pp_priors = priors
        self._pp_sites = names
        self._pp_cache: Dict = {}
        self._pp_group = group  # (GroupPrior, GroupInfo) for group scale mixtures
        self.register_buffer("_pp_ref", torch.zeros((), dtype=ref.dtype, device=ref.device), persistent=False)
        if group is not None:  # scale sites first: the weight's prior reads them
            for sfx, d in group[0].scale_priors(group[1].num_groups, ref).items():
                priors[f"weight_{sfx}"] = d
                setattr(self, f"weight_{sfx}", PyroSample(_SitePrior(f"weight_{sfx}")))
        for pname in priors:
            if not pname.startswith("weight_"):
                setattr(self, pname, PyroSample(_SitePrior(pname)))

    def _pp_prior(self, pname: str) -> dist.Distribution:
        if pname == "weight" and self._pp_group is not None:
            gp, info = self._pp_group
            scale = gp.group_scale({sfx: getattr(self, f"weight_{sfx}") for sfx in gp.suffixes})
            return conditional_weight_prior(scale, info, self._pp_priors["weight"].event_shape)
        key = (pname, self._pp_ref.dtype, self._pp_ref.device)
        if key not in self._pp_cache:
            self._pp_cache[key] = _cast_distribution(self._pp_priors[pname], self._pp_ref.dtype, self._pp_ref.device)
        return self._pp_cache[key]

    def _weights(self, x: torch.Tensor):
        """The (sampled) weight and bias, without the placeholder dimension of the data plate.

        Under vectorized particles or parallel ``Predictive`` a global site is drawn with batch shape
        ``(S, 1)``: ``S`` samples and a size-1 placeholder for the data plate (dim -1).  The network's
        outputs must carry ``S`` *left* of the batch dimension, so the placeholder is dropped and the
        layer computes ``(S, B, out)``.
        """
        if x.dtype != self._pp_ref.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model is {self._pp_ref.dtype}; call model.to({x.dtype})")
        w, b = self.weight, self.bias
        nd = w.dim() - self.weight_event_dim
        if nd > 0 and w.shape[nd - 1] == 1:
            w = w.squeeze(nd - 1)
            nd -= 1
        if b is not None and b.dim() > 1 and b.shape[-2] == 1:
            b = b.squeeze(-2)
        _note_sample_dims(nd)
        return w, b

    def _lrt(self, x: torch.Tensor):
        """Local-reparameterization inputs ``(w_loc, w_var, bias, bias_var, sample_shape, group_scale)``, or ``None``.

        ``group_scale`` is ``None`` except for group-scaled layers under the fused objective: then it holds the
        scales :math:`z` drawn per example by the source, ``(B, G)``, and ``(w_loc, w_var)`` are the moments of
        :math:`\tilde w = w / z`.

        Inside Pyro inference the weight sites are still drawn (the ELBO needs them; their batch shape
        gives the particle dimensions); under the fused objective they are not touched at all.
        """
        source = layers.local_reparam_source()
        if source is None or "weight" not in self._pp_priors:
            return None
        moments = source.local_reparam_moments(self._pp_sites["weight"])
        if moments is None:
            return None
        if layers.local_reparam_samples_weights():
            w, b = self._weights(x)  # notes the sample dims
            return moments[0], moments[1], b, None, w.shape[: w.dim() - self.weight_event_dim], None
        group_scale = None
        if self._pp_group is not None:
            group_scale = source.local_reparam_group_scale(self._pp_group[1].module, x.shape[0])
        if x.dtype != self._pp_ref.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model is {self._pp_ref.dtype}; call model.to({x.dtype})")
        if "bias" in self._pp_priors:
            bm = source.local_reparam_moments(self._pp_sites["bias"])
            if bm is None:
                raise ValueError(f"no posterior moments for {self._pp_sites['bias']!r}")
            bias, bias_var = bm
        else:
            bias, bias_var = self.bias, None  # a point estimate, or no bias
        return moments[0], moments[1], bias, bias_var, torch.Size(), group_scale


class BayesianLinear(PyroModule[nn.Linear], _BayesianLayer):
    """``nn.Linear`` whose forward accepts sampled weights with leading sample dimensions."""

    kind = "linear"
    weight_event_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lrt = self._lrt(x)
        if lrt is not None:
            if lrt[5] is not None:
                x = x * lrt[5]  # w_ij = z_j w~_ij: scale input unit j
            return layers.local_reparam_linear(x, lrt[0], lrt[1], lrt[2], sample_shape=lrt[4], bias_var=lrt[3])
        return layers.linear(x, *self._weights(x))


class _BayesianConv(_BayesianLayer):
    nd = 0

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return x
        pads = []
        for p in reversed(self.padding):
            pads += [p, p]
        return torch.nn.functional.pad(
            x.reshape((-1,) + x.shape[-self.nd - 1 :]), pads, mode=self.padding_mode
        ).reshape(x.shape[: -self.nd] + tuple(s + 2 * p for s, p in zip(x.shape[-self.nd :], self.padding)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = dict(
            nd=self.nd,
            stride=self.stride,
            padding=self.padding if self.padding_mode == "zeros" else 0,
            dilation=self.dilation,
            groups=self.groups,
        )
        x = self._pad(x)
        lrt = self._lrt(x)
        if lrt is not None:
            return layers.local_reparam_conv(x, lrt[0], lrt[1], lrt[2], lrt[4], lrt[3], out_scale=lrt[5], **kw)
        return layers.conv(x, *self._weights(x), **kw)


class BayesianConv1d(PyroModule[nn.Conv1d], _BayesianConv):
    """``nn.Conv1d`` whose forward accepts sampled kernels with leading sample dimensions."""

    kind = "conv1d"
    nd = 1
    weight_event_dim = 3
    forward = _BayesianConv.forward


class BayesianConv2d(PyroModule[nn.Conv2d], _BayesianConv):
    """``nn.Conv2d`` whose forward accepts sampled kernels with leading sample dimensions."""

    kind = "conv2d"
    nd = 2
    weight_event_dim = 4
    forward = _BayesianConv.forward


_LAYER_TYPES = {nn.Linear: BayesianLinear, nn.Conv1d: BayesianConv1d, nn.Conv2d: BayesianConv2d}


def _cast_distribution(d: dist.Distribution, dtype: torch.dtype, device: torch.device) -> dist.Distribution:
    """Rebuild ``d`` with its tensor parameters in ``dtype`` on ``device`` (a no-op when they already are)."""
    tensors = [v for v in vars(d).values() if torch.is_tensor(v) and v.is_floating_point()]
    if all(t.dtype == dtype and t.device == device for t in tensors) and not hasattr(d, "base_dist"):
        return d
    if isinstance(d, dist.Independent):
        return dist.Independent(_cast_distribution(d.base_dist, dtype, device), d.reinterpreted_batch_ndims)
    if isinstance(d, dist.ExpandedDistribution):
        return _cast_distribution(d.base_dist, dtype, device).expand(d.batch_shape)
    if hasattr(d, "base_dist") and all(t.dtype == dtype and t.device == device for t in tensors):
        return d
    kwargs = {}
    for k in d.arg_constraints:
        if k in ("probs", "logits") and k not in vars(d):
            continue
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


def _fit_prior(prior: dist.Distribution, name: str, param: torch.Tensor) -> dist.Distribution:
    """Expand a prior to the parameter's shape and make every dimension an event dimension."""
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


def _resolve_prior(prior: PriorSpec, name: str, module: nn.Module, param: torch.Tensor, default_bayes: bool):
    if isinstance(prior, torch.distributions.Distribution):
        return _fit_prior(prior, name, param) if default_bayes else None
    if isinstance(prior, Mapping):
        d = prior.get(name)
        return None if d is None else _fit_prior(d, name, param)
    d = prior(name, module, param)
    return None if d is None else _fit_prior(d, name, param)


class BayesianModel(PyroModule):
    r"""A network whose weights are Pyro sample sites, observing ``y`` through a likelihood.

    Build it with :func:`bayesianize`.  ``model(x, y=None)`` runs the network with weights drawn
    from the prior (or replayed from a guide), observes ``y`` and returns the network output
    (shape ``S + (B, …)`` with leading sample dimensions ``S`` under vectorized particles).

    :ivar sites: ``{site name: SiteInfo}`` of every weight sample site, in module order.
    :ivar point_estimates: names of parameters kept as point estimates (Pyro params).
    :ivar vectorizable: whether every stochastic layer accepts sampled weights with sample dims.
    :ivar group_prior: the :class:`~pyro_prune.GroupPrior`, or ``None``.
    :ivar group_sites: ``{layer: GroupInfo}`` of each group-scaled layer (with a ``GroupPrior``).
    """

    def __init__(
        self, net: nn.Module, likelihood: Likelihood, sites: Dict[str, SiteInfo], point_estimates, vec, template, init
    ):
        super().__init__()
        self._template = (template,)  # the user's network (a private copy), for exporting plain modules
        self._initial = init
        self.add_module("net", net)
        # Name sites like the network's own parameters ("0.weight", not "net.0.weight").
        net._pyro_set_supermodule("", self._pyro_context)
        self.likelihood = likelihood
        self.sites = sites
        self.point_estimates = tuple(point_estimates)
        self.vectorizable = vec
        self.group_prior: Optional[GroupPrior] = None
        self.group_sites: Dict[str, GroupInfo] = {}

    @property
    def scale_sites(self) -> tuple:
        """Names of the group-scale sample sites (empty unless bayesianized with a :class:`~pyro_prune.GroupPrior`)."""
        return tuple(n for info in self.group_sites.values() for n in info.scale_sites.values())

    @property
    def net(self) -> nn.Module:
        """The Bayesian copy of the network (its stochastic layers are Pyro modules)."""
        try:
            return self._modules["net"]
        except KeyError:
            raise AttributeError("net") from None

    @property
    def dataset_size(self) -> int:
        return self.likelihood.dataset_size

    def _ref(self) -> torch.Tensor:
        for b in self.buffers():
            return b
        return next(self.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return self._ref().dtype

    @property
    def device(self) -> torch.device:
        return self._ref().device

    def prior(self, name: str) -> dist.Distribution:
        """The prior distribution of weight site ``name`` (in the model's dtype/device)."""
        info = self.sites.get(name)
        if info is None:
            raise KeyError(f"{name!r} is not a weight site; sites are {list(self.sites)}")
        module = self.net.get_submodule(info.module) if info.module else self.net
        if not isinstance(module, _BayesianLayer):
            raise ValueError(f"site {name!r} belongs to a {type(module).__name__}, whose prior is a PyroSample")
        return module._pp_prior(info.param)

    def initial_weights(self) -> Dict[str, torch.Tensor]:
        """The network's weights at ``bayesianize`` time, ``{site: tensor}`` (in the model's dtype/device)."""
        return {k: v.to(device=self.device, dtype=self.dtype) for k, v in self._initial.items()}

    def template(self) -> nn.Module:
        """A fresh deep copy of the plain PyTorch network that was bayesianized (its original weights)."""
        return copy.deepcopy(self._template[0]).to(self.device)

    def _check_x(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf")
        if x.dim() == 0:
            raise ValueError("x must have a batch dimension, got a scalar")

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network alone (no likelihood), tracking the activations' leading sample dimensions."""
        _SampleDims.k = 0
        try:
            return self.net(x)
        finally:
            _SampleDims.k = 0

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the network and observe ``y`` inside ``pyro.plate("data", N, subsample_size=len(x))``.

        :param x: inputs, shape ``(B, …)`` as the network takes them.
        :param y: targets ``(B, …)`` or ``None`` (then ``obs`` is sampled).
        :returns: the network output.
        """
        self._check_x(x)
        if y is not None:
            if not torch.is_tensor(y):
                raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
            if y.dim() == 0 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y must have one row per row of x: x has shape {tuple(x.shape)}, y {tuple(y.shape)}")
        try:
            out = self.run_net(x)
        except RuntimeError as e:
            if "shape" in str(e) or "size" in str(e) or "channels" in str(e):
                raise ValueError(f"x of shape {tuple(x.shape)} does not fit the network: {e}") from e
            raise
        self.likelihood(out, y)
        return out


def bayesianize(
    net: nn.Module,
    prior: PriorSpec,
    likelihood: Likelihood,
    unsupported: Literal["raise", "point"] = "raise",
) -> BayesianModel:
    """Make a Bayesian copy of ``net`` whose weights are Pyro sample sites.

    :param net: any ``nn.Module``; it is deep-copied, never modified.
    :param prior: the prior of the weights:

        * a ``Distribution`` with scalar (or broadcastable) batch shape, expanded to every
          ``Linear``/``Conv1d``/``Conv2d`` weight and bias;
        * a callable ``(name, module, param) -> Distribution | None``, called for **every**
          parameter (``None`` keeps a point estimate), so it can also cover normalization layers;
        * a dict ``{name: Distribution | None}`` that must name every Linear/Conv parameter
          (and may name others).

    :param likelihood: a :class:`~pyro_prune.likelihoods.Likelihood` head
        (:class:`~pyro_prune.Categorical`, :class:`~pyro_prune.Bernoulli`, :class:`~pyro_prune.Gaussian`).
    :param unsupported: what to do with parameters of modules other than Linear/Conv1d/Conv2d and
        the normalization/embedding layers: ``"raise"`` (default) or ``"point"`` (keep them as
        point estimates, with a warning).
    :returns: a :class:`BayesianModel`.
    :raises TypeError: ``net`` is not an ``nn.Module`` or a prior is not a distribution.
    :raises ValueError: unsupported modules, priors that do not fit, a dict prior missing sites.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    if isinstance(net, BayesianModel):
        raise TypeError("net is already a BayesianModel")
    if not isinstance(likelihood, Likelihood):
        raise TypeError(
            f"likelihood must be a pyro_prune Likelihood (Categorical, Bernoulli, Gaussian), got {likelihood!r}"
        )
    if not (isinstance(prior, (torch.distributions.Distribution, Mapping, GroupPrior)) or callable(prior)):
        raise TypeError(f"prior must be a Distribution, a callable or a dict, got {type(prior).__name__}")
    if unsupported not in ("raise", "point"):
        raise ValueError(f"unsupported must be 'raise' or 'point', got {unsupported!r}")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in net.parameters()):
        raise ValueError("net has uninitialized (lazy) parameters; run one forward pass before bayesianize")
    template = copy.deepcopy(net)
    net = copy.deepcopy(net)
    if isinstance(prior, Mapping):
        known = {n for n, _ in net.named_parameters()}
        extra = sorted(set(prior) - known)
        if extra:
            raise ValueError(f"prior dict names parameters the network does not have: {extra}")
        needed = sorted(
            f"{mn}.{pn}" if mn else pn
            for mn, m in net.named_modules()
            if type(m) in _LAYER_TYPES
            for pn, _ in m.named_parameters(recurse=False)
        )
        missing = [n for n in needed if n not in prior]
        if missing:
            raise ValueError(f"prior dict misses Linear/Conv parameters {missing}; map them to a Distribution or None")
    if type(net) in _LAYER_TYPES:
        raise ValueError("net must be a container of layers (e.g. nn.Sequential(nn.Linear(...))), not a bare layer")

    sites: Dict[str, SiteInfo] = {}
    group_sites: Dict[str, GroupInfo] = {}
    point: list = []
    vectorizable = True
    others = []
    for mname, module in list(net.named_modules()):
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        full = {pn: (f"{mname}.{pn}" if mname else pn) for pn, _ in own}
        if type(module) not in _LAYER_TYPES:
            others.append((mname, module, own, full))
            continue
        priors = {}
        group = None
        if isinstance(prior, GroupPrior):
            if getattr(module, "groups", 1) != 1:
                raise ValueError(f"GroupPrior does not support grouped convolutions (module {mname!r})")
            w = module.weight
            priors["weight"] = _fit_prior(dist.Normal(torch.zeros((), dtype=w.dtype), 1.0), full["weight"], w)
            if module.bias is not None:
                priors["bias"] = _fit_prior(prior.bias, full["bias"], module.bias)
            axis = 1 if isinstance(module, nn.Linear) else 0
            info = GroupInfo(
                module=mname,
                weight=full["weight"],
                bias=full.get("bias"),
                axis=axis,
                num_groups=w.shape[axis],
                scale_sites={sfx: f"{full['weight']}_{sfx}" for sfx in prior.suffixes},
                kind=_LAYER_TYPES[type(module)].kind,
            )
            group = (prior, info)
            group_sites[mname] = info
        else:
            for pn, p in own:
                d = _resolve_prior(prior, full[pn], module, p, default_bayes=True)
                if d is None:
                    point.append(full[pn])
                else:
                    priors[pn] = d
        new = _convert_layer(module)
        new._pp_init(priors, own[0][1], full, group)
        _replace_module(net, mname, new)  # plain nn.Module setattr keeps the children's order
        for pn in ("weight", "bias"):
            if pn not in priors:
                continue
            sites[full[pn]] = SiteInfo(full[pn], mname, pn, new.kind, dict(own)[pn].shape, *_fans(module))
    for module in net.modules():
        if isinstance(module, FOLDED_MODULES) and (not isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin))
                                                   or (module.dim is not None and module.dim >= 0)):  # fmt: skip
            module.register_forward_pre_hook(_fold_pre_hook)
            module.register_forward_hook(_fold_hook)
    to_pyro_module_(net)
    for mname, module, own, full in others:
        covered = False
        for pn, p in own:
            d = (
                None
                if isinstance(prior, (torch.distributions.Distribution, GroupPrior))
                else _resolve_prior(prior, full[pn], module, p, default_bayes=False)
            )
            if d is not None:
                setattr(module, pn, PyroSample(d))
                sites[full[pn]] = SiteInfo(full[pn], mname, pn, "other", p.shape, 0, p.shape[0] if p.dim() else 1)
                vectorizable = False
                covered = True
            else:
                point.append(full[pn])
        if isinstance(module, _BATCH_FIRST_MODULES):
            vectorizable = False  # they expect (B, C, ...) inputs, without leading sample dims
        if covered or isinstance(module, POINT_ESTIMATE_MODULES):
            continue
        names = [full[pn] for pn, _ in own]
        kind = type(module).__mro__[1].__name__
        if unsupported == "raise":
            raise ValueError(
                f"module {mname or '<root>'!r} of type {kind} holds parameters {names}, and bayesianize "
                "supports Linear, Conv1d and Conv2d (normalization layers and embeddings stay point estimates). "
                "Pass unsupported='point' to keep them as point estimates, or give them priors with a prior callable."
            )
        warnings.warn(f"bayesianize: parameters {names} of {kind} stay point estimates", stacklevel=2)
    if not sites:
        raise ValueError("net has no Linear/Conv1d/Conv2d parameters to make Bayesian (or every prior was None)")
    params = dict(template.named_parameters())
    init = {name: params[name].detach().clone() for name in sites}
    model = BayesianModel(net, likelihood, sites, point, vectorizable, template, init)
    if isinstance(prior, GroupPrior):
        model.group_prior = prior
        model.group_sites = group_sites
    return model


def _fans(module: nn.Module):
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels // module.groups * int(math.prod(module.kernel_size)), module.out_channels


def _convert_layer(module: nn.Module) -> nn.Module:
    orig_type = type(module)
    cls = _LAYER_TYPES[orig_type]
    p = next(module.parameters())
    kw = dict(device=p.device, dtype=p.dtype)
    if orig_type is nn.Linear:
        new = cls(module.in_features, module.out_features, bias=module.bias is not None, **kw)
    else:
        if isinstance(module.padding, str) and module.padding_mode != "zeros":
            raise ValueError(
                f"conv padding={module.padding!r} with padding_mode={module.padding_mode!r} is not supported"
            )
        new = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            **kw,
        )
    new.load_state_dict(module.state_dict())
    new.train(module.training)
    return new


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent = root
    *head, last = path.split(".")
    for part in head:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def init_from(net: Union[nn.Module, Mapping[str, torch.Tensor]], fallback: Optional[Callable] = init_to_median):
    """An ``init_loc_fn`` that starts guides at the weights of a trained network.

    :param net: the (trained) ``nn.Module`` that was bayesianized, or its ``state_dict()``.
    :param fallback: init strategy for sites the network does not name (Pyro's ``init_to_median``);
        ``None`` makes missing sites an error.
    :returns: a Pyro init strategy, e.g. ``AutoNormal(model, init_loc_fn=init_from(net))``.
    """
    state = net.state_dict() if isinstance(net, nn.Module) else net
    if not isinstance(state, Mapping):
        raise TypeError(f"net must be an nn.Module or a state_dict mapping, got {type(net).__name__}")
    values = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}
    return init_to_value(values=values, fallback=fallback)
