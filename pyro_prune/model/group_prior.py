r"""Group scale-mixture priors for structured sparsity ("Bayesian Compression", Louizos, Ullrich, Welling 2017 [1]).

A :class:`GroupPrior` given to :func:`pyro_prune.bayesianize` puts one scale :math:`z_g` on every **group** of
weights of each ``Linear``/``Conv1d``/``Conv2d`` layer:

* ``nn.Linear``: a group is an **input unit** (a column of the weight ``(out, in)``), so pruning it removes
  the previous layer's neuron (or an input feature for the first layer);
* ``nn.Conv1d``/``nn.Conv2d``: a group is an **output channel** (a filter and its bias).

and makes the weights conditionally Gaussian given the scales (the centred form of :math:`w = z\,\tilde w`,
:math:`\tilde w \sim \mathcal N(0, 1)`):

.. math::

    p(w_{ij} \mid z) = \mathcal N(w_{ij};\, 0,\, z_g^2), \qquad g = \text{group of } w_{ij}.

Two scale priors:

* ``"log-uniform"`` — the Normal–Jeffreys prior :math:`p(z_g) \propto 1/|z_g|` (one sample site
  ``"<layer>.weight_scale"`` of shape ``(G,)`` with :class:`~pyro_prune.distributions.ImproperLogUniform`);
* ``"horseshoe"`` — :math:`z_g = s\,\lambda_g` with a per-layer global scale :math:`s \sim C^+(0, \tau_0)` and
  local scales :math:`\lambda_g \sim C^+(0, 1)`, each written non-centred as :math:`\sqrt{a\,b}` with Gamma and
  inverse-Gamma factors ([1] §3.2, :func:`~pyro_prune.distributions.half_cauchy_noncentred`): four sites
  ``"<layer>.weight_scale_a"`` (Gamma(½, 1), ``(G,)``), ``"<layer>.weight_scale_b"`` (InvGamma(½, 1), ``(G,)``),
  ``"<layer>.weight_global_a"`` (Gamma(½, rate τ₀⁻²), ``(1,)``), ``"<layer>.weight_global_b"`` (InvGamma(½, 1),
  ``(1,)``), so that :math:`z_g = \sqrt{a_g b_g\, a^{(s)} b^{(s)}}`.

Biases get ``GroupPrior(bias=...)`` (default :math:`\mathcal N(0, 1)`), not scaled by the groups.

References

[1] Christos Louizos, Karen Ullrich, Max Welling. "Bayesian Compression for Deep Learning", NeurIPS 2017.
[2] Carlos M. Carvalho, Nicholas G. Polson, James G. Scott. "The horseshoe estimator for sparse signals",
    Biometrika 97(2), 2010.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import pyro.distributions as dist
import torch

from .._checks import check_choice, check_positive
from ..distributions import ImproperLogUniform, half_cauchy_noncentred

__all__ = ["GroupPrior", "GroupInfo", "PRIOR_KINDS", "GROUPINGS", "conditional_weight_prior"]

#: The scale priors :class:`GroupPrior` knows.
PRIOR_KINDS = ("log-uniform", "horseshoe")

#: The groupings :class:`GroupPrior` knows (``"neuron"``: Linear input units, Conv output channels).
GROUPINGS = ("neuron",)

_SUFFIXES = {"log-uniform": ("scale",), "horseshoe": ("scale_a", "scale_b", "global_a", "global_b")}


class GroupPrior:
    r"""A group scale-mixture prior for :func:`pyro_prune.bayesianize` (see the module docstring).

    :param kind: ``"log-uniform"`` (Normal–Jeffreys, :math:`p(z) \propto 1/|z|`) or ``"horseshoe"``
        (:math:`z = s\lambda`, :math:`\lambda \sim C^+(0,1)`, :math:`s \sim C^+(0, \tau_0)` per layer).
    :param tau0: global scale :math:`\tau_0 > 0` of the horseshoe (ignored for ``"log-uniform"``).
    :param bias: prior of every bias (default ``Normal(0, 1)``).
    :param groups: ``"neuron"``: input units of Linear layers and output channels of Conv layers (the only
        grouping implemented; named for DESIGN.md's ``groups="neuron"``).
    :raises TypeError: ``tau0`` is not a number or ``bias`` not a distribution.
    :raises ValueError: an unknown ``kind`` or ``groups``, or ``tau0`` not finite and positive.
    """

    def __init__(
        self,
        kind: Literal["log-uniform", "horseshoe"] = "log-uniform",
        tau0: float = 1.0,
        bias: Optional[dist.Distribution] = None,
        groups: Literal["neuron"] = "neuron",
    ):
        self.kind = check_choice("kind", kind, PRIOR_KINDS)
        self.tau0 = check_positive("tau0", tau0)
        self.groups = check_choice("groups", groups, GROUPINGS)
        if bias is not None and not isinstance(bias, torch.distributions.Distribution):
            raise TypeError(f"bias must be a Distribution or None, got {type(bias).__name__}")
        self.bias = bias if bias is not None else dist.Normal(0.0, 1.0)

    @property
    def suffixes(self) -> Tuple[str, ...]:
        """Names of the scale sites of one layer, after ``"<layer>.weight_"``."""
        return _SUFFIXES[self.kind]

    def scale_priors(self, num_groups: int, ref: torch.Tensor) -> Dict[str, dist.Distribution]:
        """``{suffix: prior}`` of one layer's scale sites (in ``ref``'s dtype/device)."""
        kw = dict(dtype=ref.dtype, device=ref.device)
        if self.kind == "log-uniform":
            return {"scale": ImproperLogUniform(torch.Size([num_groups])).to_event(1)}
        local = half_cauchy_noncentred(torch.ones(num_groups, **kw))
        glob = half_cauchy_noncentred(torch.full((1,), self.tau0, **kw), scale_in="gamma")
        return {
            "scale_a": local.gamma.to_event(1),
            "scale_b": local.inverse_gamma.to_event(1),
            "global_a": glob.gamma.to_event(1),
            "global_b": glob.inverse_gamma.to_event(1),
        }

    def group_scale(self, values: Dict[str, torch.Tensor]) -> torch.Tensor:
        r""":math:`z_g` from the sampled scale sites (``(…, G)``)."""
        if self.kind == "log-uniform":
            return values["scale"]
        return (values["scale_a"] * values["scale_b"] * values["global_a"] * values["global_b"]).sqrt()

    def __repr__(self) -> str:
        tau = f", tau0={self.tau0:g}" if self.kind == "horseshoe" else ""
        return f"GroupPrior({self.kind!r}{tau})"


@dataclass(frozen=True)
class GroupInfo:
    """The groups of one layer's weight.

    :ivar module: dotted path of the layer (``"0"``).
    :ivar weight: its weight site (``"0.weight"``).
    :ivar bias: its bias site, or ``None``.
    :ivar axis: axis of the weight that indexes groups (1 for Linear: input units; 0 for Conv: output channels).
    :ivar num_groups: number of groups :math:`G`.
    :ivar scale_sites: ``{suffix: site name}`` of the layer's scale sites.
    :ivar kind: the layer kind (``"linear"``, ``"conv1d"``, ``"conv2d"``).
    """

    module: str
    weight: str
    bias: Optional[str]
    axis: int
    num_groups: int
    scale_sites: Dict[str, str]
    kind: str

    def expand(self, group_values: torch.Tensor, weight_dim: int) -> torch.Tensor:
        """Reshape per-group values ``(…, G)`` to broadcast against the weight ``(…, out, in, *k)``."""
        if self.axis == 1:  # Linear (out, in): groups on the last axis
            return group_values.unsqueeze(-2)
        return group_values.reshape(group_values.shape + (1,) * (weight_dim - 1))


def conditional_weight_prior(scale: torch.Tensor, info: GroupInfo, shape: torch.Size) -> dist.Distribution:
    r""":math:`p(w \mid z) = \mathcal N(0, z_g^2)` for a weight of ``shape`` with group scales ``scale`` ``(…, G)``."""
    std = info.expand(scale.abs(), len(shape))
    loc = torch.zeros((), dtype=scale.dtype, device=scale.device)
    batch = torch.broadcast_shapes(std.shape, shape)
    return dist.Normal(loc, std).expand(batch).to_event(len(shape))
