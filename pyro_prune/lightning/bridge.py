"""The bridge between Lightning checkpoints and pyro_prune's posterior files (:func:`pyro_prune.save` /
:func:`pyro_prune.load`).

* Lightning checkpoint → posterior file: ``module = BayesianLightningModule.load_from_checkpoint(path, model=model,
  guide=guide)`` with a freshly built model and guide of the same architecture (the library's guides set themselves
  up from the checkpoint's state; Pyro's autoguides need ``example=(x, y)``), then :func:`save_posterior`;
  :func:`load_checkpoint` does both steps' first half.
* posterior file → Lightning: :func:`from_saved` builds the module around ``pp.load(path)``'s model and guide
  (training continues from the saved posterior; the optimizer starts afresh, as in any new ``Trainer.fit``).

The checkpoint's ``state_dict`` is the module's: ``model.<name>`` and ``guide.<name>`` entries, the same tensors
``pp.save`` writes as the model's and the guide's ``state_dict``.
"""

from __future__ import annotations

import os
from typing import Any, Union

import torch

from ..io import Saved, save
from .module import BayesianLightningModule

__all__ = ["save_posterior", "from_saved", "load_checkpoint"]


def save_posterior(module: BayesianLightningModule, path: Union[str, os.PathLike], **kwargs: Any) -> None:
    """Write the module's model and guide (and its :attr:`~BayesianLightningModule.history` records) with
    :func:`pyro_prune.save`; ``kwargs`` go to it (``pruned=``, ``metadata=``, ...). ``pp.load(path)`` reads it.

    :raises TypeError: ``module`` is not a :class:`BayesianLightningModule`.
    """
    if not isinstance(module, BayesianLightningModule):
        raise TypeError(f"module must be a BayesianLightningModule, got {type(module).__name__}")
    save(path, module.model, module.guide, history=module.history, **kwargs)


def from_saved(saved: Saved, **kwargs: Any) -> BayesianLightningModule:
    """A :class:`BayesianLightningModule` around a loaded posterior (``pp.load(path)``); ``kwargs`` are the
    module's other arguments (``lr``, ``kl_weight``...).

    :raises TypeError: ``saved`` is not what :func:`pyro_prune.load` returns, or holds no guide.
    """
    if not isinstance(saved, Saved):
        raise TypeError(f"saved must be what pp.load returns (a Saved), got {type(saved).__name__}")
    if saved.guide is None:
        raise TypeError("saved holds no guide (the file was written with the model alone)")
    return BayesianLightningModule(saved.model, saved.guide, **kwargs)


def load_checkpoint(
    path: Union[str, os.PathLike], model: torch.nn.Module, guide: torch.nn.Module, **kwargs: Any
) -> BayesianLightningModule:
    """The module of a Lightning checkpoint, its tensors loaded into ``model`` and ``guide`` (freshly built, of the
    checkpoint's architecture; a guide of this library need not be set up); ``kwargs`` override the checkpoint's
    hyper-parameters. Then :func:`save_posterior` writes the posterior file."""
    return BayesianLightningModule.load_from_checkpoint(os.fspath(path), model=model, guide=guide, **kwargs)
