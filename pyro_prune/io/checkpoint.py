"""A :func:`~pyro_prune.fit` callback that writes the posterior file every ``k`` epochs."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from .._checks import check_bool, check_int
from ..training import History, RunCallback
from .files import PathLike, save

__all__ = ["Checkpoint"]


class Checkpoint(RunCallback):
    """Save model, guide and History (with its resume state) every ``every`` epochs during ``fit``.

    ``pp.fit(model, guide, data, epochs, callbacks=[pp.io.Checkpoint("run.pt", every=5)])``; after a crash,
    ``s = pp.load("run.pt"); s.restore_rng(); pp.fit(s.model, s.guide, data, more, resume=s.history)`` continues the
    run as if it had not stopped (the same optimizer moments, KL warm-up position and random draws).

    :param path: the file; ``"{epoch}"`` in it is replaced by the number of epochs done (one file per checkpoint),
        otherwise each checkpoint replaces the previous one (atomically).
    :param every: epochs between checkpoints (the last epoch of a run is saved only when it falls on one).
    :param rng: also save the random generators' states (default ``True``: needed for an exact continuation).
    :param metadata: JSON-able ``dict`` written with each checkpoint.
    :ivar last_path: the file written last, or ``None``.
    """

    def __init__(self, path: PathLike, every: int = 1, rng: bool = True, metadata: Optional[Mapping[str, Any]] = None):
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.every = check_int("every", every, 1)
        self.rng = check_bool("rng", rng)
        self.metadata = None if metadata is None else dict(metadata)
        self.last_path: Optional[str] = None

    def on_epoch_end(self, history: History, model: Any, guide: Any) -> bool:
        done = int(history.records[-1]["epoch"]) + 1
        if done % self.every == 0:
            path = self.path.format(epoch=done) if "{epoch}" in self.path else self.path
            save(path, model, guide, history=history, rng=self.rng, metadata=self.metadata)
            self.last_path = path
        return False

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r}, every={self.every})"
