"""Saving and loading posteriors: one file per posterior, read back without running code from it.

``pp.save(path, model, guide, history=..., pruned=..., metadata=...)`` writes, ``pp.load(path)`` returns a
:class:`Saved` (``.model``, ``.guide``, ``.history``, ``.pruned``...); :class:`Checkpoint` saves during
:func:`~pyro_prune.fit` every ``k`` epochs.  The format (:mod:`pyro_prune.io.files`) holds tensors read with
``torch.load(weights_only=True)`` and JSON metadata; models are described by what ``bayesianize`` was given
(:mod:`pyro_prune.io.model_spec`), guides by their registered class and constructor arguments
(:mod:`pyro_prune.io.guide_formats`).  New guide or likelihood classes are made saveable by registration:
:func:`register_guide`, :func:`register_likelihood`.
"""

from __future__ import annotations

from .checkpoint import Checkpoint
from .files import FORMAT, FORMAT_VERSION, Saved, load, save
from .guide_formats import GUIDES, GuideFormat, register_guide
from .model_spec import LIKELIHOODS, register_likelihood
from .specs import SpecError

__all__ = [
    "save",
    "load",
    "Saved",
    "Checkpoint",
    "FORMAT",
    "FORMAT_VERSION",
    "register_guide",
    "register_likelihood",
    "GuideFormat",
    "GUIDES",
    "LIKELIHOODS",
    "SpecError",
]
