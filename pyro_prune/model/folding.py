r"""Sample-dimension folding for parameter-free modules that only take ``(B, C, …)`` inputs.

Under vectorized particles or parallel ``Predictive`` the activations of a bayesianized network carry leading
sample dimensions :math:`S`: a layer's output has shape :math:`S + (B, C, …)`.  Pooling, ``Flatten``,
``Upsample``, channel softmaxes and the like accept a single batch dimension, so a forward pre-hook folds their
input to :math:`(\prod S \cdot B, C, …)` and a forward hook unfolds their output back to :math:`S + (B, …)`:

.. math::

    \mathrm{fold}(x)_{(s, b)} = x_{s, b}, \qquad f(x)_{s, b} = \mathrm{unfold}\big(f(\mathrm{fold}(x))\big)_{s, b},

which is exact for every module that treats batch rows independently.

How many leading dimensions are sample dimensions is known only while the network runs: each Bayesian layer
notes the sample dimensions of its weights (:func:`note_sample_dims`) and the hooks read the largest so far
(:func:`current_sample_dims`).  That counter lives in a :class:`contextvars.ContextVar` opened per forward pass by
:func:`sample_dims_scope` (entered by :meth:`~pyro_prune.model.BayesianModel.run_net`), so a nested forward pass,
or one in another thread, never sees another pass's count; outside any scope the count is 0 and the hooks do
nothing.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

__all__ = [
    "FOLDED_MODULES",
    "SampleDims",
    "sample_dims_scope",
    "note_sample_dims",
    "current_sample_dims",
    "add_fold_hooks",
]

#: Parameter-free modules that expect ``(B, C, ...)`` inputs: under sample dimensions their input is folded to
#: ``(S·B, C, ...)`` and their output unfolded back to ``S + (B, ...)`` (see :func:`add_fold_hooks`).
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

_SOFTMAXES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)


class SampleDims:
    """The sample-dimension state of one forward pass.

    :ivar k: number of leading sample dimensions of the activations seen so far (0: none).
    :ivar folded: stack of the leading shapes folded by the pre-hooks of the modules now running (``None`` for a
        module whose input was not folded), popped by their forward hooks.
    """

    __slots__ = ("k", "folded")

    def __init__(self) -> None:
        self.k = 0
        self.folded: List[Optional[Tuple[int, ...]]] = []

    def note(self, k: int) -> None:
        """Record that some activation or weight carries ``k`` leading sample dimensions."""
        if k > self.k:
            self.k = k


_CURRENT: ContextVar[Optional[SampleDims]] = ContextVar("pyro_prune_sample_dims", default=None)


@contextlib.contextmanager
def sample_dims_scope() -> Iterator[SampleDims]:
    """Open a fresh :class:`SampleDims` for one forward pass; the previous one (or none) is restored on exit."""
    state = SampleDims()
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)


def note_sample_dims(k: int) -> None:
    """Note ``k`` leading sample dimensions in the current forward pass (no-op outside :func:`sample_dims_scope`)."""
    state = _CURRENT.get()
    if state is not None:
        state.note(k)


def current_sample_dims() -> int:
    """Leading sample dimensions seen so far in the current forward pass (0 outside :func:`sample_dims_scope`)."""
    state = _CURRENT.get()
    return 0 if state is None else state.k


def _fold_pre_hook(module: nn.Module, args: tuple) -> Optional[tuple]:
    state = _CURRENT.get()
    if state is None:
        return None
    x = args[0]
    k = state.k
    if k == 0 or not torch.is_tensor(x) or x.dim() <= k + 1:
        state.folded.append(None)
        return None
    state.folded.append(tuple(x.shape[: k + 1]))
    return (x.reshape((-1,) + x.shape[k + 1 :]),) + tuple(args[1:])


def _fold_hook(module: nn.Module, args: tuple, out: torch.Tensor) -> Optional[torch.Tensor]:
    state = _CURRENT.get()
    if state is None or not state.folded:
        return None
    lead = state.folded.pop()
    return None if lead is None else out.reshape(lead + tuple(out.shape[1:]))


def _folds(module: nn.Module) -> bool:
    """Whether ``module`` gets the fold hooks (softmaxes only over a non-negative, i.e. non-batch-relative, dim)."""
    if not isinstance(module, FOLDED_MODULES):
        return False
    return not isinstance(module, _SOFTMAXES) or (module.dim is not None and module.dim >= 0)


def add_fold_hooks(net: nn.Module) -> None:
    """Register the fold pre-hook and unfold hook on every :data:`FOLDED_MODULES` module of ``net``."""
    for module in net.modules():
        if _folds(module):
            module.register_forward_pre_hook(_fold_pre_hook)
            module.register_forward_hook(_fold_hook)
