r"""The effect handlers of :func:`~pyro_prune.fit`'s SVI path, and :func:`kl_term`.

* :class:`LatentScale`: multiplies the log density of every latent site by the KL weight :math:`\beta` (warm-up and
  tempering, applied to the model and the guide alike);
* :class:`ObsRecorder`: keeps the observed site, for the epoch's expected log-likelihood;
* :func:`kl_term`: :math:`\mathrm{KL}(q\,\|\,p)` of a model and guide, analytic where a KL is registered.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import pyro
import torch
from pyro.distributions.kl import kl_divergence
from pyro.poutine.messenger import Messenger

from .model.likelihoods import OBS_SITE

__all__ = ["LatentScale", "ObsRecorder", "kl_term"]


class LatentScale(Messenger):
    """Multiply the log density of every latent (non-observed) sample site by ``beta``."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: Dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and self.beta != 1.0:
            msg["scale"] = self.beta * msg["scale"]


class ObsRecorder(Messenger):
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
