"""The random number generators' states as tensors and plain numbers (what a ``weights_only`` file may hold).

A run continued from a checkpoint draws the same numbers as the run that was not interrupted only if torch's
generator (which also shuffles ``DataLoader`` batches), Python's ``random`` and NumPy's are where they were.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch

__all__ = ["capture_rng", "set_rng"]


def capture_rng() -> Dict[str, Any]:
    """``{"torch", "python", "numpy"}``: the global generators' states (CUDA's too when CUDA is initialized)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng(state: Dict[str, Any]) -> None:
    """Set the generators to a state from :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
