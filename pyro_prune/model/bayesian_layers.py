r"""Bayesian ``Linear``/``Conv1d``/``Conv2d``: PyroModule layers whose weights and biases are sample sites.

Each layer reads its parameters as ``PyroSample`` sites with the priors given by ``bayesianize`` and runs the
functional layers of :mod:`pyro_prune.model.layers`, which accept weights with leading sample dimensions.  Under
:func:`~pyro_prune.model.layers.local_reparameterization` a layer asks the active source for the Gaussian moments
:math:`(\theta, \sigma^2)` of its weight and samples pre-activations instead (:class:`LRTInputs`):

.. math::

    y = x\theta^\top + b + \sqrt{(x \odot x)(\sigma^2)^\top + \sigma_b^2}\;\varepsilon.

With a :class:`~pyro_prune.model.group_prior.GroupPrior` the weight's prior is conditional on the layer's group
scale sites, :math:`p(w \mid z) = \mathcal N(0, z_g^2)`.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Tuple

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.nn import PyroModule, PyroSample

from . import layers
from .folding import note_sample_dims
from .group_prior import GroupInfo, GroupPrior, conditional_weight_prior
from .priors import SitePrior, cast_distribution

__all__ = [
    "LRTInputs",
    "BayesianLayer",
    "BayesianLinear",
    "BayesianConv1d",
    "BayesianConv2d",
    "LAYER_TYPES",
    "to_bayesian_layer",
    "layer_fans",
]


class LRTInputs(NamedTuple):
    r"""What a Bayesian layer needs to sample its pre-activations by local reparameterization.

    :ivar w_loc: posterior mean :math:`\theta` of the weight (of :math:`\tilde w = w / z` when group-scaled).
    :ivar w_var: posterior variance :math:`\sigma^2` of the weight, same shape.
    :ivar bias: the bias (sampled, posterior mean or point estimate), or ``None``.
    :ivar bias_var: the bias's posterior variance when read from moments, else ``None``.
    :ivar sample_shape: leading sample shape the output must carry (vectorized particles), ``()`` under the fused
        objective.
    :ivar group_scale: per-example group scales :math:`z`, ``(B, G)``, of a group-scaled layer under the fused
        objective, else ``None``.
    """

    w_loc: torch.Tensor
    w_var: torch.Tensor
    bias: Optional[torch.Tensor]
    bias_var: Optional[torch.Tensor]
    sample_shape: torch.Size
    group_scale: Optional[torch.Tensor]


def _new_layer(cls: type) -> BayesianLayer:
    """Unpickling helper: an empty instance of the Bayesian layer class ``cls`` (its state is set afterwards)."""
    return cls.__new__(cls)


class BayesianLayer:
    """Mixin for Bayesian layers: priors per parameter, dtype/device tracking, site names, LRT inputs.

    A copy (``copy.deepcopy``, pickle) is again a Bayesian layer of the same class: :meth:`_pp_reduce` replaces
    ``PyroModule[nn.Linear]``'s reduction, which would rebuild a plain ``PyroLinear`` without priors.

    :cvar kind: ``"linear"``, ``"conv1d"``, ``"conv2d"``.
    :cvar weight_event_dim: dimensions of one weight (2 for Linear, 3 for Conv1d, 4 for Conv2d).
    """

    kind = "other"
    weight_event_dim = 2

    def _pp_init(
        self,
        priors: Dict[str, dist.Distribution],
        ref: torch.Tensor,
        names: Dict[str, str],
        group: Optional[Tuple[GroupPrior, GroupInfo]] = None,
    ) -> None:
        """Install the priors as ``PyroSample`` sites (group scale sites first: the weight's prior reads them)."""
        self._pp_priors = priors
        self._pp_sites = names
        self._pp_cache: Dict = {}
        self._pp_group = group
        self.register_buffer("_pp_ref", torch.zeros((), dtype=ref.dtype, device=ref.device), persistent=False)
        if group is not None:
            for sfx, d in group[0].scale_priors(group[1].num_groups, ref).items():
                priors[f"weight_{sfx}"] = d
                setattr(self, f"weight_{sfx}", PyroSample(SitePrior(f"weight_{sfx}")))
        for pname in priors:
            if not pname.startswith("weight_"):
                setattr(self, pname, PyroSample(SitePrior(pname)))

    def _pp_reduce(self):
        """``__reduce__`` of the Bayesian layers: rebuild an instance of the same class from its state."""
        return _new_layer, (type(self),), self.__getstate__()

    def _pp_prior(self, pname: str) -> dist.Distribution:
        """The prior of parameter ``pname`` in the layer's current dtype/device (cached per dtype/device)."""
        if pname == "weight" and self._pp_group is not None:
            gp, info = self._pp_group
            scale = gp.group_scale({sfx: getattr(self, f"weight_{sfx}") for sfx in gp.suffixes})
            return conditional_weight_prior(scale, info, self._pp_priors["weight"].event_shape)
        key = (pname, self._pp_ref.dtype, self._pp_ref.device)
        if key not in self._pp_cache:
            self._pp_cache[key] = cast_distribution(self._pp_priors[pname], self._pp_ref.dtype, self._pp_ref.device)
        return self._pp_cache[key]

    def _check_dtype(self, x: torch.Tensor) -> None:
        if x.dtype == self._pp_ref.dtype:
            return
        if x.is_floating_point():
            raise TypeError(f"x has dtype {x.dtype} but the model is {self._pp_ref.dtype}; call model.to({x.dtype})")
        raise TypeError(
            f"x has dtype {x.dtype} but the model computes in {self._pp_ref.dtype}: cast the inputs, "
            f"x = x.to({self._pp_ref.dtype})"
        )

    def _weights(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The (sampled) weight and bias, without the placeholder dimension of the data plate.

        Under vectorized particles or parallel ``Predictive`` a global site is drawn with batch shape
        ``(S, 1)``: ``S`` samples and a size-1 placeholder for the data plate (dim -1).  The network's
        outputs must carry ``S`` *left* of the batch dimension, so the placeholder is dropped and the
        layer computes ``(S, B, out)``.  The number of sample dimensions is noted for the fold hooks.
        """
        self._check_dtype(x)
        w, b = self._on_model(self.weight), self._on_model(self.bias)
        nd = w.dim() - self.weight_event_dim
        if nd > 0 and w.shape[nd - 1] == 1:
            w = w.squeeze(nd - 1)
            nd -= 1
        if b is not None and b.dim() > 1 and b.shape[-2] == 1:
            b = b.squeeze(-2)
        note_sample_dims(nd)
        return w, b

    def _on_model(self, t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``t`` in the layer's dtype/device (a no-op for draws of the model's priors and guides; placeholders of
        ``Predictive``'s shape pass over an improper prior come in the default dtype)."""
        ref = self._pp_ref
        return t if t is None or (t.dtype == ref.dtype and t.device == ref.device) else t.to(ref)

    def _bias_moments(self, source) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(bias mean, bias variance)`` from the source, or ``(point bias or None, None)`` without a bias prior."""
        if "bias" not in self._pp_priors:
            return self.bias, None
        moments = source.local_reparam_moments(self._pp_sites["bias"])
        if moments is None:
            raise ValueError(f"no posterior moments for {self._pp_sites['bias']!r}")
        return moments[0], moments[1]

    def _lrt(self, x: torch.Tensor) -> Optional[LRTInputs]:
        r"""The :class:`LRTInputs` of this layer under the active local reparameterization, or ``None``.

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
            return LRTInputs(moments[0], moments[1], b, None, w.shape[: w.dim() - self.weight_event_dim], None)
        group_scale = None
        if self._pp_group is not None:
            group_scale = source.local_reparam_group_scale(self._pp_group[1].module, x.shape[0])
        self._check_dtype(x)
        bias, bias_var = self._bias_moments(source)
        return LRTInputs(moments[0], moments[1], bias, bias_var, torch.Size(), group_scale)


class BayesianLinear(PyroModule[nn.Linear], BayesianLayer):
    """``nn.Linear`` whose forward accepts sampled weights with leading sample dimensions."""

    kind = "linear"
    weight_event_dim = 2
    __reduce__ = BayesianLayer._pp_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lrt = self._lrt(x)
        if lrt is None:
            return layers.linear(x, *self._weights(x))
        if lrt.group_scale is not None:
            x = x * lrt.group_scale  # w_ij = z_j w~_ij: scale input unit j
        return layers.local_reparam_linear(
            x, lrt.w_loc, lrt.w_var, lrt.bias, sample_shape=lrt.sample_shape, bias_var=lrt.bias_var
        )


class _BayesianConv(BayesianLayer):
    nd = 0

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Apply a non-zero ``padding_mode`` by hand (the functional conv only pads with zeros)."""
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
        if lrt is None:
            return layers.conv(x, *self._weights(x), **kw)
        return layers.local_reparam_conv(
            x, lrt.w_loc, lrt.w_var, lrt.bias, lrt.sample_shape, lrt.bias_var, out_scale=lrt.group_scale, **kw
        )


class BayesianConv1d(PyroModule[nn.Conv1d], _BayesianConv):
    """``nn.Conv1d`` whose forward accepts sampled kernels with leading sample dimensions."""

    kind = "conv1d"
    nd = 1
    weight_event_dim = 3
    __reduce__ = BayesianLayer._pp_reduce
    forward = _BayesianConv.forward


class BayesianConv2d(PyroModule[nn.Conv2d], _BayesianConv):
    """``nn.Conv2d`` whose forward accepts sampled kernels with leading sample dimensions."""

    kind = "conv2d"
    nd = 2
    weight_event_dim = 4
    __reduce__ = BayesianLayer._pp_reduce
    forward = _BayesianConv.forward


#: The PyTorch layers ``bayesianize`` makes Bayesian, and their Bayesian versions.
LAYER_TYPES = {nn.Linear: BayesianLinear, nn.Conv1d: BayesianConv1d, nn.Conv2d: BayesianConv2d}


def layer_fans(module: nn.Module) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of a Linear/Conv layer: inputs per output unit and output units."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels // module.groups * int(math.prod(module.kernel_size)), module.out_channels


def _conv_kwargs(module: nn.Module) -> dict:
    if isinstance(module.padding, str) and module.padding_mode != "zeros":
        raise ValueError(f"conv padding={module.padding!r} with padding_mode={module.padding_mode!r} is not supported")
    return dict(
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        padding_mode=module.padding_mode,
    )


def to_bayesian_layer(module: nn.Module) -> BayesianLayer:
    """A Bayesian copy of a ``Linear``/``Conv1d``/``Conv2d`` layer (same hyper-parameters, weights and mode).

    :raises ValueError: a conv with string padding and a non-zero ``padding_mode``.
    """
    cls = LAYER_TYPES[type(module)]
    p = next(module.parameters())
    kw = dict(device=p.device, dtype=p.dtype, bias=module.bias is not None)
    if isinstance(module, nn.Linear):
        new = cls(module.in_features, module.out_features, **kw)
    else:
        new = cls(module.in_channels, module.out_channels, module.kernel_size, **_conv_kwargs(module), **kw)
    new.load_state_dict(module.state_dict())
    new.train(module.training)
    return new
