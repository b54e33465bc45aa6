r"""Likelihood heads: how a network output observes the targets ``y``.

Each head knows ``dataset_size`` :math:`N` and observes a mini-batch of size :math:`B`
inside ``pyro.plate("data", N, subsample_size=B)``, so Pyro scales the batch
log-likelihood by :math:`N / B` and the ELBO is an unbiased estimate of

.. math::

    \mathcal L = \sum_{n=1}^N \mathbb E_q[\log p(y_n \mid x_n, w)] - \mathrm{KL}(q(w)\,\|\,p(w)).

Network outputs may carry leading sample dimensions (vectorized particles, parallel
``Predictive``); the data plate is always the rightmost batch dimension.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

__all__ = ["Likelihood", "Categorical", "Bernoulli", "Gaussian", "OBS_SITE"]

#: Name of the observed sample site.
OBS_SITE = "obs"


class Likelihood(PyroModule):
    """Base class of likelihood heads.

    :param dataset_size: number of training examples :math:`N` (scales mini-batch log-likelihoods).
    """

    task = "classification"

    def __init__(self, dataset_size: int):
        super().__init__()
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int):
            raise TypeError(f"dataset_size must be an int, got {type(dataset_size).__name__}")
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
        self.dataset_size = dataset_size

    # -- to override ---------------------------------------------------------------------------------
    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        """The predictive distribution of ``y`` given network ``output`` (batch shape ``S + (B,)``)."""
        raise NotImplementedError

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        """Raise ``ValueError`` when ``y`` cannot be observed under ``output``."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def forward(self, output: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Observe ``y`` (or sample it when ``None``) inside the subsampled data plate.

        :param output: network output, shape ``S + (B, ...)``.
        :param y: targets of shape ``(B, ...)`` or ``None``.
        :returns: the observed or sampled targets.
        """
        batch = y.shape[0] if y is not None else self._batch_size(output)
        size = self.dataset_size
        if y is not None:
            if batch > size:
                raise ValueError(
                    f"dataset_size ({size}) is smaller than the batch ({batch}); "
                    "pass the number of training examples as dataset_size"
                )
            self.check_target(y, output)
        else:
            size = max(size, batch)  # predicting: any number of inputs (the plate's scale is not used)
        fn = self.observation_distribution(output, y)
        with pyro.plate("data", size, subsample_size=batch, dim=-1):
            return pyro.sample(OBS_SITE, fn, obs=y)

    def observation_distribution(self, output: torch.Tensor, y: Optional[torch.Tensor]) -> dist.Distribution:
        """The distribution the ``obs`` site uses for ``output`` (and the shape of ``y``, when given)."""
        return self.distribution(output)

    def log_likelihood(self, output: torch.Tensor, y: torch.Tensor, check: bool = True) -> torch.Tensor:
        r"""Per-example :math:`\log p(y_b \mid f_b)` (shape ``S + (B,)``), with the same checks as ``forward``
        (``check=False`` skips them, for data already checked)."""
        if check:
            if y.shape[0] > self.dataset_size:
                raise ValueError(
                    f"dataset_size ({self.dataset_size}) is smaller than the batch ({y.shape[0]}); "
                    "pass the number of training examples as dataset_size"
                )
            self.check_target(y, output)
        y = self._cast_target(y, output)
        return self.observation_distribution(output, y).log_prob(y)

    def _cast_target(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return y

    def _batch_size(self, output: torch.Tensor) -> int:
        return self.distribution(output).batch_shape[-1]


def _check_finite(y: torch.Tensor) -> None:
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf")


class Categorical(Likelihood):
    r"""Categorical likelihood :math:`p(y \mid f) = \mathrm{softmax}(f)_y` on logits ``(…, B, C)``."""

    task = "classification"

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=output)

    def log_likelihood(self, output: torch.Tensor, y: torch.Tensor, check: bool = True) -> torch.Tensor:
        if output.dim() == 2:  # one network: the cross-entropy kernel, same value as Categorical(logits).log_prob
            if check:
                super().log_likelihood(output, y, check=True)  # the checks
            return -torch.nn.functional.cross_entropy(output, y, reduction="none")
        return super().log_likelihood(output, y, check)

    def _batch_size(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() != 1:
            raise ValueError(f"y must have shape (batch,) of class indices for Categorical, got {tuple(y.shape)}")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"y must hold integer class indices for Categorical, got dtype {y.dtype}")
        if output.shape[-2] != y.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows but the network output has {output.shape[-2]}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= output.shape[-1]):
            raise ValueError(
                f"y has labels outside [0, {output.shape[-1]}) (the network has {output.shape[-1]} outputs)"
            )

    def probs(self, output: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``softmax(output)``."""
        return output.softmax(-1)


class Bernoulli(Likelihood):
    r"""Bernoulli likelihood on logits: output ``(…, B)`` or ``(…, B, 1)``, targets in {0, 1}."""

    task = "classification"

    @staticmethod
    def _logits(output: torch.Tensor) -> torch.Tensor:
        return output.squeeze(-1) if output.dim() >= 2 and output.shape[-1] == 1 else output

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self._logits(output))

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() != 1:
            raise ValueError(f"y must have shape (batch,) for Bernoulli, got {tuple(y.shape)}")
        _check_finite(y)
        logits = self._logits(output)
        if logits.shape[-1] != y.shape[0]:
            raise ValueError(
                f"y has {y.shape[0]} rows but the network output has shape {tuple(output.shape)}; "
                "Bernoulli expects one logit per example"
            )
        if y.numel() and not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("y must hold 0/1 targets for Bernoulli")

    def forward(self, output: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return super().forward(output, None if y is None else y.to(output.dtype))

    def _cast_target(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return y.to(output.dtype)

    def probs(self, output: torch.Tensor) -> torch.Tensor:
        """Two-column class probabilities ``[1 - p, p]``."""
        p = torch.sigmoid(self._logits(output))
        return torch.stack([1 - p, p], -1)


class Gaussian(Likelihood):
    r"""Gaussian likelihood :math:`y \sim \mathcal N(f(x), \sigma^2)`.

    :param dataset_size: number of training examples.
    :param scale: the observation noise :math:`\sigma`:

        * a positive float: fixed;
        * ``"learned"``: one homoscedastic :math:`\sigma` learned as a point estimate
          (``PyroParam`` ``likelihood.scale``, initialized at ``init_scale``);
        * ``"heteroscedastic"``: the network outputs ``2·D`` columns, the means and
          :math:`\log\sigma` (``output[..., :D]``, ``output[..., D:]``).

    The network output has shape ``(…, B, D)`` (``(…, B, 2D)`` when heteroscedastic): targets
    ``y`` of shape ``(B,)`` go with ``D = 1``, targets ``(B, D)`` with ``D`` outputs
    (dimensions are independent).
    """

    task = "regression"

    def __init__(self, dataset_size: int, scale: Union[float, str] = 1.0, init_scale: float = 1.0):
        super().__init__(dataset_size)
        self.mode = "fixed"
        if isinstance(scale, str):
            if scale not in ("learned", "heteroscedastic"):
                raise ValueError(f"scale must be a positive float, 'learned' or 'heteroscedastic', got {scale!r}")
            self.mode = scale
            if scale == "learned":
                if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale > 0):
                    raise ValueError(f"init_scale must be a positive finite number, got {init_scale!r}")
                self.scale = PyroParam(torch.tensor(float(init_scale)), constraint=constraints.positive)
        else:
            if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a positive finite number, got {scale!r}")
            self.fixed_scale = float(scale)

    def mean_scale(self, output: torch.Tensor, event_dim: int = 0):
        """Split ``output`` into the predictive mean and scale (before any squeeze)."""
        if self.mode == "heteroscedastic":
            d = output.shape[-1]
            if d % 2:
                raise ValueError(f"heteroscedastic Gaussian needs an even number of outputs (mean, log-scale), got {d}")
            loc, log_scale = output[..., : d // 2], output[..., d // 2 :]
            return loc, log_scale.clamp(-20, 20).exp()
        if self.mode == "learned":
            return output, self.scale.to(output.dtype).expand_as(output)
        return output, torch.full_like(output, self.fixed_scale)

    def distribution(self, output: torch.Tensor, y_dim: int = 1) -> dist.Distribution:
        loc, scale = self.mean_scale(output)
        if y_dim == 1:
            return dist.Normal(loc.squeeze(-1), scale.squeeze(-1))
        return dist.Normal(loc, scale).to_event(1)

    def _batch_size(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def check_target(self, y: torch.Tensor, output: torch.Tensor) -> None:
        if y.dim() not in (1, 2):
            raise ValueError(f"y must have shape (batch,) or (batch, D) for Gaussian, got {tuple(y.shape)}")
        if not y.is_floating_point():
            raise ValueError(f"y must be floating point for Gaussian, got dtype {y.dtype}")
        _check_finite(y)
        loc, _ = self.mean_scale(output)
        d = 1 if y.dim() == 1 else y.shape[1]
        if loc.dim() < 2 or loc.shape[-2] != y.shape[0] or loc.shape[-1] != d:
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not match the network's mean output of shape {tuple(loc.shape)}"
            )

    def observation_distribution(self, output: torch.Tensor, y: Optional[torch.Tensor]) -> dist.Distribution:
        if y is not None:
            return self.distribution(output, y.dim())
        return self.distribution(output, 1 if self.mean_scale(output)[0].shape[-1] == 1 else 2)
