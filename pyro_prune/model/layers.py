r"""Functional layers that accept weights with leading sample dimensions.

Pyro's vectorized particles (``RenyiELBO(vectorize_particles=True)``) and parallel
``Predictive`` draw every weight site with extra *leading* batch dimensions, e.g. a
``Linear`` weight of shape ``(K, 1, out, in)`` for ``K`` particles when the model has
one plate.  :func:`torch.nn.functional.linear` and the convolutions accept only a
single weight, so this module broadcasts instead:

.. math::

    y_{s, b} = x_{s, b} W_s^\top + b_s,

where ``s`` runs over the broadcast of the sample dimensions of the input and of the
weight.  Shapes, with ``S_x``/``S_w`` the leading sample shapes:

* linear: ``x: S_x + (B, in)``, ``weight: S_w + (out, in)``, ``bias: S_b + (out,)``
  → ``broadcast(S_x, S_w, S_b) + (B, out)``;
* conv (``nd`` spatial dims): ``x: S_x + (B, C, *spatial)``,
  ``weight: S_w + (n_out, C / groups, *kernel)`` → ``S + (B, n_out, *spatial')``.

The batched convolution is one grouped convolution over the flattened samples.

The *local reparameterization trick* (Kingma, Salimans, Welling 2015) samples
pre-activations instead of weights for a factorized Gaussian
:math:`q(w_{ij}) = \mathcal N(\theta_{ij}, \sigma^2_{ij})`:

.. math::

    \mu = x \theta^\top + b, \qquad s^2 = (x \odot x)(\sigma^2)^\top, \qquad
    y = \mu + s \odot \varepsilon,\ \varepsilon \sim \mathcal N(0, I),

and for convolutions the same with ``conv(x, θ)`` and ``conv(x², σ²)``
(Molchanov, Ashukha, Vetrov 2017, eq. 14).

References

[1] Kingma, Salimans, Welling. "Variational Dropout and the Local Reparameterization Trick", NeurIPS 2015.
[2] Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep Neural Networks", ICML 2017.
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._checks import check_bool

__all__ = [
    "linear",
    "conv",
    "conv1d",
    "conv2d",
    "local_reparam_linear",
    "local_reparam_conv",
    "local_reparameterization",
    "local_reparam_source",
    "local_reparam_samples_weights",
    "LocalReparamState",
    "LRT_EPS",
]

#: Added to the pre-activation variance before the square root, for stability.
LRT_EPS = 1e-8

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_Size = Union[int, Sequence[int], str]


def _batch_shape(t: Optional[torch.Tensor], event_dims: int) -> torch.Size:
    if t is None:
        return torch.Size()
    return t.shape[: t.dim() - event_dims]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Affine map with broadcasting over leading sample dimensions of ``x``, ``weight`` and ``bias``.

    :param x: inputs, shape ``S_x + (B, in)``.
    :param weight: weights, shape ``S_w + (out, in)``.
    :param bias: optional bias, shape ``S_b + (out,)``.
    :returns: ``broadcast(S_x, S_w, S_b) + (B, out)``.
    """
    if weight.dim() == 2 and (bias is None or bias.dim() == 1):
        return F.linear(x, weight, bias)
    out = torch.matmul(x, weight.transpose(-1, -2))
    if bias is not None:
        out = out + bias.unsqueeze(-2)
    return out


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    nd: int,
    stride: _Size = 1,
    padding: _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``nd``-dimensional convolution with broadcasting over leading sample dimensions.

    :param x: inputs, shape ``S_x + (B, C, *spatial)`` with ``len(spatial) == nd``.
    :param weight: kernels, shape ``S_w + (n_out, C // groups, *kernel)``.
    :param bias: optional bias, shape ``S_b + (n_out,)``.
    :param nd: number of spatial dimensions (1, 2 or 3).
    :returns: ``broadcast(S_x, S_w, S_b) + (B, n_out, *spatial_out)``.
    """
    fn = _CONV_FNS[nd]
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    xb = _batch_shape(x, nd + 2)
    wb = _batch_shape(weight, nd + 2)
    bb = _batch_shape(bias, 1)
    if not wb and not bb:
        if not xb:
            return fn(x, weight, bias, groups=groups, **kw)
        flat = x.reshape((-1,) + x.shape[len(xb) + 1 :])
        out = fn(flat, weight, bias, groups=groups, **kw)
        return out.reshape(xb + x.shape[len(xb) : len(xb) + 1] + out.shape[1:])
    S = torch.broadcast_shapes(xb, wb, bb)
    n = math.prod(S)
    B = x.shape[len(xb)]
    n_out = weight.shape[len(wb)]
    w = weight.expand(S + weight.shape[len(wb) :]).reshape((n * n_out,) + weight.shape[len(wb) + 1 :])
    if not xb and groups == 1:
        # Stack the sampled kernels along the output channels: no copy of x needed.
        out = fn(x, w, None, groups=1, **kw)
    else:
        xe = x.expand(S + x.shape[len(xb) :])  # S + (B, C, *sp)
        xe = xe.reshape((n,) + x.shape[len(xb) :]).transpose(0, 1)  # (B, n, C, *sp)
        xe = xe.reshape((B, n * x.shape[len(xb) + 1]) + x.shape[len(xb) + 2 :])
        out = fn(xe, w, None, groups=n * groups, **kw)
    spatial = out.shape[2:]
    out = out.reshape((B, n, n_out) + spatial).transpose(0, 1).reshape(S + (B, n_out) + spatial)
    if bias is not None:
        out = out + bias.reshape(bb + (1, n_out) + (1,) * nd)
    return out


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, **kw) -> torch.Tensor:
    """:func:`conv` with ``nd=1``."""
    return conv(x, weight, bias, nd=1, **kw)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, **kw) -> torch.Tensor:
    """:func:`conv` with ``nd=2``."""
    return conv(x, weight, bias, nd=2, **kw)


def _noise_like(mean: torch.Tensor, sample_shape: torch.Size, trailing: int) -> torch.Tensor:
    """Standard normal noise of shape ``broadcast(sample_shape + (1,) * trailing, mean.shape)``."""
    if not sample_shape:
        return torch.randn_like(mean)
    shape = torch.broadcast_shapes(tuple(sample_shape) + (1,) * trailing, mean.shape)
    return torch.randn(shape, dtype=mean.dtype, device=mean.device)


def local_reparam_linear(
    x: torch.Tensor,
    weight_loc: torch.Tensor,
    weight_var: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    sample_shape: torch.Size = torch.Size(),
    bias_var: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Sample pre-activations of a linear layer with factorized Gaussian weights.

    :math:`y = x\theta^\top + b + \sqrt{(x\odot x)(\sigma^2)^\top + \epsilon}\,\varepsilon`.

    :param x: inputs ``S_x + (B, in)``.
    :param weight_loc: :math:`\theta`, ``(out, in)``.
    :param weight_var: :math:`\sigma^2`, ``(out, in)``.
    :param bias: optional bias, ``S_b + (out,)`` (kept out of the variance pass).
    :param sample_shape: leading sample shape the output must carry (vectorized particles),
        so each particle gets independent noise.
    :param bias_var: optional variance of a Gaussian bias, ``(out,)`` (added to the output variance).
    :returns: ``broadcast(sample_shape, S_x, S_b) + (B, out)``.
    """
    mean = linear(x, weight_loc, bias)
    var = linear(x * x, weight_var, bias_var)
    return mean + (var + LRT_EPS).sqrt() * _noise_like(mean, sample_shape, 2)


def local_reparam_conv(
    x: torch.Tensor,
    weight_loc: torch.Tensor,
    weight_var: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    sample_shape: torch.Size = torch.Size(),
    bias_var: Optional[torch.Tensor] = None,
    *,
    out_scale: Optional[torch.Tensor] = None,
    nd: int,
    stride: _Size = 1,
    padding: _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
) -> torch.Tensor:
    r"""Local reparameterization for convolutions: ``conv(x, θ) + sqrt(conv(x², σ²)) ε``.

    With ``out_scale`` :math:`z` (per example and output channel, ``(B, C_out)``; the group scales of
    Bayesian Compression, :math:`w_c = z_c \tilde w_c`) the weight part is scaled and the bias is not:
    :math:`z\,\mathrm{conv}(x, \theta) + b + \sqrt{z^2\,\mathrm{conv}(x^2, \sigma^2) + \sigma_b^2}\,\varepsilon`.

    Arguments as :func:`conv` and :func:`local_reparam_linear`.
    """
    kw = dict(nd=nd, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if out_scale is None:
        mean = conv(x, weight_loc, bias, **kw)
        var = conv(x * x, weight_var, bias_var, **kw)
        return mean + (var + LRT_EPS).sqrt() * _noise_like(mean, sample_shape, nd + 2)
    z = out_scale.reshape(out_scale.shape + (1,) * nd)
    mean = z * conv(x, weight_loc, None, **kw)
    var = z * z * conv(x * x, weight_var, None, **kw)
    if bias_var is not None:
        var = var + bias_var.reshape((-1,) + (1,) * nd)
    out = mean + (var + LRT_EPS).sqrt() * _noise_like(mean, sample_shape, nd + 2)
    return out if bias is None else out + bias.reshape((-1,) + (1,) * nd)


class LocalReparamState(NamedTuple):
    """The active local reparameterization: its moment ``source`` and whether layers still draw weight sites."""

    source: Optional[Any]
    sample_weights: bool


_INACTIVE = LocalReparamState(None, True)
_ACTIVE: ContextVar[LocalReparamState] = ContextVar("pyro_prune_local_reparam", default=_INACTIVE)


@contextlib.contextmanager
def local_reparameterization(source: Any, sample_weights: bool = True) -> Iterator[Any]:
    """Context manager under which Bayesian layers use the local reparameterization trick.

    The state is context-local (a :class:`contextvars.ContextVar`): it nests, is restored on exit even after an
    exception, and never reaches other threads.

    :param source: an object with ``local_reparam_moments(site) -> (loc, var) | None`` giving the guide's
        Gaussian mean and variance of a weight or bias site (``None``: use the sampled value), and, for
        group-scaled layers, ``local_reparam_group_scale(module, batch) -> (batch, G)`` scales.
        :func:`pyro_prune.fit` enters it for guides that support it; prediction never does.
    :param sample_weights: when ``True`` (inside Pyro inference) layers still draw their weight sites, so the
        ELBO sees them; when ``False`` (the fused objective of :func:`pyro_prune.fit`) layers read moments only
        and never touch the sample sites.
    :raises TypeError: ``source`` has no ``local_reparam_moments`` or ``sample_weights`` is not a bool.
    """
    if not callable(getattr(source, "local_reparam_moments", None)):
        raise TypeError(f"source must have a local_reparam_moments(site) method, got {type(source).__name__}")
    check_bool("sample_weights", sample_weights)
    token = _ACTIVE.set(LocalReparamState(source, sample_weights))
    try:
        yield source
    finally:
        _ACTIVE.reset(token)


def local_reparam_source() -> Optional[Any]:
    """The active local-reparameterization source, or ``None``."""
    return _ACTIVE.get().source


def local_reparam_samples_weights() -> bool:
    """Whether layers draw their weight sites under the active local reparameterization."""
    return _ACTIVE.get().sample_weights
