r"""Your own data: CSV and NPZ files as a :class:`Table`, split and standardized with training rows only.

* :func:`load_csv`: a header row, numeric feature columns and a ``target`` column (numbers or text labels);
* :func:`load_npz`: arrays ``x`` ``(N, ...)`` and ``y`` ``(N,)``;
* :func:`infer_task`: integer targets with few distinct values are classes, anything else is regression;
* :func:`split_indices`: disjoint random (stratified) parts, e.g. train / validation / test;
* :func:`standardizer`: per-feature mean and standard deviation of the training rows,
  :math:`x \mapsto (x - \hat\mu_{\mathrm{train}}) / \hat\sigma_{\mathrm{train}}`.

Class labels become indices ``0..K-1`` in sorted label order; :attr:`Table.classes` maps them back.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._checks import check_choice, check_fraction, check_int
from .embedded import TASKS, check_dtype

__all__ = ["Table", "infer_task", "load_csv", "read_column", "load_npz", "split_indices", "standardizer"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Table:
    """Examples read from a file: inputs, targets and what they mean (no split, no standardization yet).

    :ivar x: inputs ``(N, D)`` (or ``(N, ...)`` from an NPZ file), floating.
    :ivar y: targets ``(N,)``: class indices ``0..K-1`` (``int64``) or floating regression targets.
    :ivar task: ``"classification"``, ``"regression"``, or ``"unknown"`` (features only, no targets read).
    :ivar num_classes: ``K`` for classification, else ``None``.
    :ivar classes: the original label of each class index (numbers or strings), classification only.
    :ivar columns: the feature names (CSV header, or ``x0, x1, ...``).
    :ivar target: the target column's name.
    """

    x: torch.Tensor
    y: torch.Tensor
    task: str
    num_classes: Optional[int] = None
    classes: Optional[List[Any]] = None
    columns: List[str] = field(default_factory=list)
    target: str = "y"


def infer_task(y: Sequence[Any], max_classes: int = 20) -> str:
    r"""``"classification"`` if every target is a non-numeric label, or an integer value with at most
    ``max_classes`` distinct values (and at least two); else ``"regression"``.

    :param y: the targets (numbers, or strings for labels).
    :param max_classes: the most distinct integer values read as classes.
    :raises ValueError: if ``y`` is empty.
    """
    check_int("max_classes", max_classes, 2)
    values = list(y)
    if not values:
        raise ValueError("y is empty: no targets to infer the task from")
    if any(isinstance(v, str) for v in values):
        return "classification"
    distinct = set(float(v) for v in values)
    if all(math.isfinite(v) and v == int(v) for v in distinct) and 2 <= len(distinct) <= max_classes:
        return "classification"
    return "regression"


def _encode_targets(values: List[Any], task: str, dtype: torch.dtype) -> Tuple[torch.Tensor, Optional[List[Any]]]:
    """Class indices in sorted label order and the labels, or floating regression targets."""
    if task == "regression":
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype), None
    numeric = not any(isinstance(v, str) for v in values)
    labels = sorted(set(int(float(v)) if numeric else v for v in values))
    index = {label: i for i, label in enumerate(labels)}
    y = [index[int(float(v)) if numeric else v] for v in values]
    if len(labels) < 2:
        raise ValueError(f"classification needs at least two classes, the targets hold {labels}")
    return torch.as_tensor(y, dtype=torch.int64), labels


def _table(x: np.ndarray, values: List[Any], task: str, columns: List[str], target: str, dtype) -> Table:
    check_choice("task", task, ("auto",) + TASKS)
    task = infer_task(values) if task == "auto" else task
    if task == "regression" and any(isinstance(v, str) for v in values):
        raise ValueError(f"regression needs numeric targets; column {target!r} holds text")
    y, classes = _encode_targets(values, task, dtype)
    k = None if classes is None else len(classes)
    return Table(torch.as_tensor(x, dtype=dtype), y, task, k, classes, columns, target)


def _number(text: str) -> Union[float, str]:
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _read_rows(path: PathLike) -> Tuple[List[str], List[List[str]]]:
    with open(os.fspath(path), newline="") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{os.fspath(path)!r} is empty: a header row is needed")
    return [h.strip() for h in rows[0]], rows[1:]


def read_column(path: PathLike, name: str) -> List[Union[float, str]]:
    """The raw values of one CSV column: numbers where they parse, else the stripped text.

    :raises ValueError: no such column (the message lists the columns).
    """
    header, rows = _read_rows(path)
    if name not in header:
        raise ValueError(f"no column {name!r} in {os.fspath(path)!r}; its columns are {header}")
    i = header.index(name)
    return [_number(row[i]) if i < len(row) else "" for row in rows]


def load_csv(
    path: PathLike,
    target: Optional[str],
    task: str = "auto",
    dtype: torch.dtype = torch.float32,
    columns: Optional[Sequence[str]] = None,
) -> Table:
    r"""A CSV file with a header row: every column but ``target`` (or the given ``columns``) is a numeric feature.

    The target may be numbers or text labels; ``task="auto"`` applies :func:`infer_task` (integer values, at most 20
    distinct: classification). Class labels become indices ``0..K-1`` in sorted order (:attr:`Table.classes` keeps
    the labels). A missing or non-numeric feature value, a missing target or a ragged row raises.

    :param path: the file.
    :param target: the target column's name; ``None`` reads features only (``y`` is empty, for prediction).
    :param task: ``"auto"``, ``"classification"`` or ``"regression"``.
    :param dtype: floating dtype of the inputs (and regression targets).
    :param columns: the feature columns to read, in this order (default: all but ``target``); others are ignored.
    :raises FileNotFoundError: no such file.
    :raises ValueError: an unknown ``target`` or column (the message lists the columns), a bad cell (named by line
        and column).
    """
    check_dtype(dtype)
    header, rows = _read_rows(path)
    missing = [c for c in ([] if target is None else [target]) + list(columns or []) if c not in header]
    if missing:
        raise ValueError(f"no column {missing[0]!r} in {os.fspath(path)!r}; its columns are {header}")
    t = None if target is None else header.index(target)
    features = [header.index(c) for c in columns] if columns is not None else [i for i in range(len(header)) if i != t]
    x = np.empty((len(rows), len(features)))
    values: List[Any] = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{os.fspath(path)!r} line {line}: {len(row)} cells, the header has {len(header)}")
        cells = [_number(row[i]) for i in features]
        bad = [header[i] for i, c in zip(features, cells) if isinstance(c, str) or not math.isfinite(c)]
        if bad or (t is not None and row[t].strip() in ("", "nan", "NaN")):
            raise ValueError(f"{os.fspath(path)!r} line {line}: missing or non-numeric value in {bad or [target]}")
        x[line - 2] = cells
        if t is not None:
            values.append(_number(row[t]))
    names = [header[i] for i in features]
    if t is None:
        return Table(torch.as_tensor(x, dtype=dtype), torch.empty(0), "unknown", columns=names)
    return _table(x, values, task, names, target, dtype)


def load_npz(path: PathLike, task: str = "auto", dtype: torch.dtype = torch.float32, need_y: bool = True) -> Table:
    """An ``.npz`` file (``numpy.savez``) holding ``x`` ``(N, ...)`` and ``y`` ``(N,)``.

    :param path: the file.
    :param task: ``"auto"`` (:func:`infer_task`), ``"classification"`` or ``"regression"``.
    :param dtype: floating dtype of the inputs.
    :param need_y: refuse a file without ``y`` (else ``y`` is empty, for prediction).
    :raises ValueError: a missing array, non-finite inputs, or lengths that differ.
    """
    check_dtype(dtype)
    with np.load(os.fspath(path), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "x" not in arrays or (need_y and "y" not in arrays):
        raise ValueError(f"{os.fspath(path)!r} must hold arrays 'x' and 'y'; it holds {sorted(arrays)}")
    x = np.asarray(arrays["x"], dtype=np.float64)
    if x.ndim < 2 or not np.isfinite(x).all():
        raise ValueError(f"{os.fspath(path)!r}: 'x' must be finite with shape (N, features...), got {x.shape}")
    columns = [f"x{i}" for i in range(int(np.prod(x.shape[1:])))]
    if "y" not in arrays:
        return Table(torch.as_tensor(x, dtype=dtype), torch.empty(0), "unknown", columns=columns)
    y = np.asarray(arrays["y"]).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{os.fspath(path)!r}: 'x' has {len(x)} rows, 'y' {len(y)}")
    values = y.tolist() if y.dtype.kind in "iufb" else [str(v) for v in y]
    return _table(x, values, task, columns, "y", dtype)


def split_indices(
    n: int, fractions: Sequence[float], seed: int = 0, stratify: Optional[torch.Tensor] = None
) -> List[torch.Tensor]:
    r"""Random disjoint index sets: the rest first, then one part per fraction (``round(f·n)`` rows, at least one).

    With ``stratify`` (class labels ``(n,)``) each part keeps the class proportions (scikit-learn's
    ``train_test_split(stratify=...)``, applied part by part). ``fractions`` of 0 give empty parts.

    :param n: number of rows.
    :param fractions: fractions of ``n`` in each part after the first, summing to less than 1.
    :param seed: ``random_state`` of the shuffles.
    :param stratify: labels to stratify by.
    :returns: ``[rest, part_1, ...]``, sorted ``int64`` index tensors.
    :raises ValueError: fractions outside ``[0, 1)``, summing to 1 or more, or too few rows.
    """
    from sklearn.model_selection import train_test_split  # scikit-learn loads on first use

    for i, f in enumerate(fractions):
        check_fraction(f"fractions[{i}]", f, include_zero=True)
    if sum(fractions) >= 1:
        raise ValueError(f"fractions must sum to less than 1, got {list(fractions)}")
    rest, parts = np.arange(n), []
    for f in fractions:
        size = max(1, round(f * n)) if f > 0 else 0
        if size == 0:
            parts.append(np.empty(0, dtype=np.int64))
            continue
        if size >= len(rest):
            raise ValueError(f"{n} rows are too few for the fractions {list(fractions)}")
        labels = None if stratify is None else stratify[rest].numpy()
        rest, part = train_test_split(rest, test_size=size, random_state=seed, stratify=labels)
        parts.append(part)
    return [torch.as_tensor(np.sort(p), dtype=torch.int64) for p in [rest, *parts]]


def standardizer(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-feature mean and standard deviation of training inputs ``x`` ``(N, ...)``, so that
    :math:`x \mapsto (x - \hat\mu)/\hat\sigma` standardizes; a constant feature gets :math:`\hat\sigma = 1`
    (only centred), as scikit-learn's ``StandardScaler`` (population standard deviation).

    :returns: ``(mean, std)``, each shaped like one example.
    """
    if not torch.is_tensor(x) or x.dim() < 2 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, features...)")
    mean, std = x.mean(0), x.std(0, unbiased=False)
    return mean, torch.where(std > 0, std, torch.ones_like(std))
