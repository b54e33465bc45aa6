"""The posterior of a guide restricted to the weights a rule keeps (:class:`PrunedGuide`).

Pruned weights are exactly zero in every draw: each masked latent site's distribution is wrapped by
:class:`_MaskedSamples` (through the :class:`_MaskValues` messenger) while the wrapped guide runs.  The pruned guide
registers its marginals with :func:`~pyro_prune.marginals.register_marginals` (pruned entries: mean and scale 0,
:math:`\\log\\alpha = \\infty`), so it can be pruned or plotted again.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import torch
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger

from ..marginals import Marginal, marginals, register_marginals

__all__ = ["PrunedGuide"]


class _MaskedSamples(TorchDistribution):
    """Draws of ``base`` with pruned entries set to zero (for prediction; ``log_prob`` is the base's)."""

    arg_constraints: Dict = {}

    def __init__(self, base: TorchDistribution, keep: torch.Tensor):
        self.base, self.keep = base, keep
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self) -> bool:
        return self.base.has_rsample

    def expand(self, batch_shape, _instance=None):
        return _MaskedSamples(self.base.expand(batch_shape), self.keep)

    def sample(self, sample_shape=torch.Size()):
        value = self.base.sample(sample_shape)
        return value * self.keep.to(value.dtype)

    def rsample(self, sample_shape=torch.Size()):
        value = self.base.rsample(sample_shape)
        return value * self.keep.to(value.dtype)

    def log_prob(self, value):
        return self.base.log_prob(value)


class _MaskValues(Messenger):
    """Replace the distribution of each masked latent site by one whose draws are zero where pruned."""

    def __init__(self, masks: Dict[str, torch.Tensor]):
        super().__init__()
        self.masks = masks

    def _process_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] in self.masks:
            msg["fn"] = _MaskedSamples(msg["fn"], self.masks[msg["name"]])


class PrunedGuide:
    """The posterior of ``guide`` restricted to kept weights: pruned weights are exactly zero in every draw.

    Use it like the guide for prediction (``pp.predict``, ``pyro.infer.Predictive``); it has no
    parameters of its own and is not meant for further training.

    :param guide: the trained guide (any guide with registered marginals).
    :param masks: ``{site: bool keep mask}`` shaped like each pruned site.
    """

    def __init__(self, guide: Any, masks: Dict[str, torch.Tensor]):
        self.guide = guide
        self.masks = masks

    def __call__(self, *args, **kwargs):
        with _MaskValues(self.masks):
            return self.guide(*args, **kwargs)

    def median(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        med = self.guide.median(*args, **kwargs)
        return {k: v * self.masks[k].to(v.dtype) if k in self.masks else v for k, v in med.items()}

    def marginals(self) -> Dict[str, Marginal]:
        out = {}
        for k, m in marginals(self.guide).items():
            if k in self.masks:
                keep = self.masks[k].to(m.loc.dtype)
                la = m.log_alpha.masked_fill(~self.masks[k], math.inf)
                m = Marginal(m.loc * keep, m.scale * keep, la, m.group)
            out[k] = m
        return out


register_marginals(PrunedGuide, PrunedGuide.marginals)
