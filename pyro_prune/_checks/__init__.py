"""One validator per concept, shared by every module (pure: imports nothing of the package).

Each raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a value out of range, naming the
argument, and returns the value normalized (``float``, ``int``, tensor).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "Batches",
    "check_bool",
    "check_real",
    "check_positive",
    "check_nonnegative",
    "check_fraction",
    "check_int",
    "check_choice",
    "check_quantiles",
    "as_batches",
    "unpack_batch",
]

Batches = Union[Iterable[Tuple[torch.Tensor, torch.Tensor]], Tuple[torch.Tensor, torch.Tensor]]


def check_bool(name: str, value: Any) -> bool:
    """A Python ``bool`` (``True`` or ``False``; not ``0``/``1`` nor a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_real(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """A real number (Python or numpy; not ``bool``), never NaN; infinite only with ``allow_inf``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """A finite number ``> 0``."""
    value = check_real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_nonnegative(name: str, value: Any) -> float:
    """A finite number ``>= 0``."""
    value = check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_fraction(name: str, value: Any, *, include_zero: bool = False) -> float:
    """A number in ``(0, 1)``, or ``[0, 1)`` with ``include_zero``."""
    value = check_real(name, value)
    if not (0 <= value < 1 if include_zero else 0 < value < 1):
        raise ValueError(f"{name} must be in {'[0, 1)' if include_zero else '(0, 1)'}, got {value}")
    return value


def check_int(name: str, value: Any, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An integer (Python or numpy; not ``bool``) in ``[low, high]`` (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices`` (compared with ``==``; a non-hashable value is simply not among them)."""
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_quantiles(
    quantiles: Any, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None
) -> torch.Tensor:
    """``quantiles`` as a 1-D tensor of levels in (0, 1) (every guide's ``quantiles()``), in ``dtype`` on ``device``
    (the guide's); NaN is rejected."""
    q = torch.as_tensor(quantiles, dtype=dtype, device=device)
    if q.dim() != 1 or not bool(((q > 0) & (q < 1)).all()):
        raise ValueError(f"quantiles must be a 1-D sequence in (0, 1), got {quantiles!r}")
    return q


def as_batches(data: Batches, name: str = "data") -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
    """Accept a ``DataLoader`` (or any iterable of ``(x, y)`` batches) or one ``(x, y)`` tuple."""
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: x and y have different lengths ({x.shape[0]} and {y.shape[0]})")
        return [(x, y)]
    if torch.is_tensor(data) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a DataLoader / iterable of (x, y) batches or an (x, y) tuple")
    return data


def unpack_batch(batch: Any, name: str, device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One ``(x, y)`` batch of tensors, moved to ``device`` when given."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"{name} must yield (x, y) pairs, got {type(batch).__name__}")
    x, y = batch
    if not (torch.is_tensor(x) and torch.is_tensor(y)):
        raise TypeError(f"{name} must yield tensors, got {type(x).__name__} and {type(y).__name__}")
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y
