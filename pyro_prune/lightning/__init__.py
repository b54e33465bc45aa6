"""Training at scale on PyTorch Lightning (the optional extra ``pip install pyro-prune[lightning]``).

``import pyro_prune`` never imports Lightning; ``import pyro_prune.lightning`` does.

* :class:`BayesianLightningModule`: :func:`~pyro_prune.fit`'s objective, KL warm-up, optimizer and History as a
  ``LightningModule``, for ``Trainer(strategy="ddp", devices=..., num_nodes=...)``;
* :class:`StepObjective`: one step's loss, scaled for data parallelism (:mod:`pyro_prune.distributed`);
* :func:`save_posterior`, :func:`from_saved`, :func:`load_checkpoint`: Lightning checkpoints ↔ ``pp.save`` files.
"""

from .bridge import from_saved, load_checkpoint, save_posterior
from .module import BayesianLightningModule
from .objective import ObservedScale, StepObjective

__all__ = [
    "BayesianLightningModule",
    "StepObjective",
    "ObservedScale",
    "save_posterior",
    "from_saved",
    "load_checkpoint",
]
