r"""Data sources of the command: a CSV or NPZ file, an MNIST IDX folder, or an embedded set, split and standardized.

The split is train / validation / test (a separate ``--test`` file, or a predefined test part of an embedded set,
replaces the test fraction); validation is stratified for classification; the standardization is fitted on the
training rows only and saved with the posterior, so ``predict`` applies the same map. Inputs keep their per-example
shape (an NPZ ``x`` of shape ``(N, C, L)``, the embedded ``mnist1d`` ``(N, 1, 40)``): the standardization is per
feature of the flattened example, :math:`\tilde x_{n,j} = (x_{n,j} - \hat\mu_j)/\hat\sigma_j` for
:math:`j = 1..\prod_d s_d`, and each example is reshaped back to its shape :math:`s`; ``input_shape`` is saved so
``predict`` refuses inputs of another shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import data as _data

__all__ = ["Dataset", "SourceError", "load_table", "prepare", "read_inputs", "standardize"]


class SourceError(ValueError):
    """A data problem, with the flag it comes from (``--data``, ``--target``, ``--test``)."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def _load(flag: str, source: str, target: Optional[str], task: str):
    try:
        return load_table(source, target, task)
    except (OSError, ValueError, ImportError) as e:
        column = isinstance(e, ValueError) and "column" in str(e) and flag == "--data"
        raise SourceError("--target" if column or "--target" in str(e) else flag, str(e)) from e


@dataclass
class Dataset:
    """The three parts, standardized, and what they mean (see :class:`pyro_prune.data.Table`)."""

    name: str
    task: str
    num_classes: Optional[int]
    classes: Optional[List[Any]]
    columns: List[str]
    target: str
    x: Dict[str, torch.Tensor] = field(default_factory=dict)
    y: Dict[str, torch.Tensor] = field(default_factory=dict)
    mean: Optional[torch.Tensor] = None
    std: Optional[torch.Tensor] = None
    indices: Dict[str, torch.Tensor] = field(default_factory=dict)
    spec: Dict[str, Any] = field(default_factory=dict)
    input_shape: Tuple[int, ...] = ()

    @property
    def n_out(self) -> int:
        """Network outputs: one per class, or one regression output."""
        return self.num_classes if self.task == "classification" else 1

    def sizes(self) -> Dict[str, int]:
        """Rows in each part."""
        return {part: len(self.y[part]) for part in ("train", "val", "test")}


def _sklearn(name: str) -> _data.Table:
    from sklearn.datasets import load_breast_cancer, load_digits

    loader = load_digits if name == "digits" else load_breast_cancer
    bunch = loader()
    columns = [str(c) for c in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(bunch.data.shape[1])]
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    k = int(y.max()) + 1
    return _data.Table(
        torch.as_tensor(bunch.data, dtype=torch.float32), y, "classification", k, list(range(k)), columns, "target"
    )


def _from_split(split: _data.DataSplit) -> Tuple[_data.Table, _data.Table]:
    """A predefined train/test :class:`DataSplit` as two tables (inputs keep their per-example shape)."""

    def table(x: torch.Tensor, y: torch.Tensor) -> _data.Table:
        k = split.num_classes
        cols = [f"x{i}" for i in range(x[0].numel())]
        return _data.Table(x, y, split.task, k, None if k is None else list(range(k)), cols, "y")

    return table(split.x_train, split.y_train), table(split.x_test, split.y_test)


def load_table(source: str, target: Optional[str], task: str) -> Tuple[_data.Table, Optional[_data.Table]]:
    """The table ``source`` names, and its predefined test part (embedded sets with one, MNIST folders) or ``None``.

    :raises ValueError: ``source`` is neither a file, a folder nor an embedded name; a CSV without ``target``.
    """
    if source in ("digits", "breast-cancer"):
        return _sklearn(source), None
    if source == "mnist1d":
        return _from_split(_data.load_mnist1d(num_samples=4000))
    if source == "gap-regression":
        return _from_split(_data.load_gap_regression())
    if os.path.isdir(source):
        return _from_split(_data.load_mnist(source, standardize=False))
    if source.lower().endswith(".csv"):
        if target is None:
            raise ValueError("a CSV file needs --target COLUMN")
        return _data.load_csv(source, target, task), None
    if source.lower().endswith(".npz"):
        return _data.load_npz(source, task), None
    raise ValueError(f"{source!r} is not a .csv or .npz file, an MNIST folder, or an embedded name")


def _same_meaning(table: _data.Table, test: _data.Table, source: str) -> _data.Table:
    """Check a separate test table against the training table; re-index its classes to the training labels."""
    if test.columns != table.columns:
        raise ValueError(f"the test file {source!r} has columns {test.columns}, the data {table.columns}")
    if tuple(test.x.shape[1:]) != tuple(table.x.shape[1:]):
        shapes = f"{tuple(test.x.shape[1:])}, the data {tuple(table.x.shape[1:])}"
        raise ValueError(f"the test file {source!r} has examples of shape {shapes}")
    if table.task == "classification":
        labels = [test.classes[i] for i in test.y.tolist()] if test.classes else []
        unknown = sorted({str(v) for v in labels} - {str(v) for v in table.classes})
        if unknown:
            raise ValueError(f"the test file {source!r} has labels {unknown} not in the training data")
        index = {str(v): i for i, v in enumerate(table.classes)}
        test.y = torch.as_tensor([index[str(v)] for v in labels], dtype=torch.int64)
    return test


def _split(table: _data.Table, test: Optional[_data.Table], val_fraction: float, test_fraction: float, seed: int):
    """Index parts ``train``/``val``/``test`` of ``table`` (``test`` empty when a test table is given)."""
    stratify = table.y if table.task == "classification" else None
    fractions = [val_fraction] if test is not None else [val_fraction, test_fraction]
    if test is None and test_fraction == 0:
        raise ValueError("--test-fraction 0 needs a --test file")
    parts = _data.split_indices(len(table.y), fractions, seed=seed, stratify=stratify)
    names = ["train", "val", "test"][: len(parts)]
    out = dict(zip(names, parts))
    out.setdefault("test", torch.empty(0, dtype=torch.int64))
    return out


def prepare(spec: Dict[str, Any]) -> Dataset:
    """Load, split and standardize as ``spec`` says (``data``, ``target``, ``task``, ``test``, ``val_fraction``,
    ``test_fraction``, ``standardize``, ``seed``); the spec is stored in the result to be saved with the posterior.
    """
    table, test = _load("--data", spec["data"], spec.get("target"), spec.get("task", "auto"))
    if spec.get("test"):
        test, _ = _load("--test", spec["test"], spec.get("target"), table.task)
        try:
            test = _same_meaning(table, test, spec["test"])
        except ValueError as e:
            raise SourceError("--test", str(e)) from e
    try:
        idx = _split(table, test, spec["val_fraction"], spec["test_fraction"], spec["seed"])
    except ValueError as e:
        raise SourceError("--val-fraction", str(e)) from e
    x = {part: table.x[i] for part, i in idx.items()}
    y = {part: table.y[i] for part, i in idx.items()}
    if test is not None:
        x["test"], y["test"] = test.x, test.y
    mean = std = None
    if spec.get("standardize", True):
        mean, std = _data.standardizer(x["train"].reshape(len(x["train"]), -1))
        x = {part: standardize(v, mean, std) for part, v in x.items()}
    name = os.path.basename(spec["data"].rstrip("/")) or spec["data"]
    return Dataset(
        name,
        table.task,
        table.num_classes,
        table.classes,
        table.columns,
        table.target,
        x,
        y,
        mean,
        std,
        idx,
        dict(spec),
        tuple(table.x.shape[1:]),
    )


def standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` over each flattened example of ``x`` ``(N, ...)``, reshaped back; ``mean`` and ``std``
    hold one value per feature of the flattened example (any shape with that many elements)."""
    flat = x.reshape(len(x), -1)
    return ((flat - mean.reshape(-1).to(flat)) / std.reshape(-1).to(flat)).reshape(x.shape)


def read_inputs(
    path: str, columns: List[str], target: Optional[str], input_shape: Optional[Tuple[int, ...]] = None
) -> Tuple[torch.Tensor, Optional[List[Any]]]:
    """Inputs of a CSV (the saved feature ``columns``, by name, in order; other columns ignored) or NPZ (``x``)
    file for prediction, and the raw targets when the file has them (the ``target`` column, or ``y``).

    :param input_shape: the per-example shape the posterior was fitted on: an NPZ ``x`` must have it (``(N,
        *input_shape)``); CSV rows are reshaped to it. ``None`` (a file from before shapes were saved): flat rows.
    :raises ValueError: a missing column or array, a bad cell, an NPZ ``x`` of another per-example shape.
    """
    if path.lower().endswith(".npz"):
        table = _data.load_npz(path, task="regression", need_y=False)
        with np.load(path, allow_pickle=False) as f:
            y = f["y"].reshape(-1).tolist() if "y" in f.files else None
        if input_shape is None:
            return table.x.reshape(len(table.x), -1), y
        if tuple(table.x.shape[1:]) != tuple(input_shape):
            raise ValueError(
                f"'x' in {path!r} has shape {tuple(table.x.shape)}, i.e. examples of shape {tuple(table.x.shape[1:])}; "
                f"the posterior was fitted on examples of shape {tuple(input_shape)} (x of shape (N, "
                f"{', '.join(map(str, input_shape))}))"
            )
        return table.x, y
    x = _data.load_csv(path, None, columns=columns).x
    if input_shape is not None:
        x = x.reshape(len(x), *input_shape)
    try:
        y = None if target is None else _data.read_column(path, target)
    except ValueError:
        y = None  # inputs without targets: predict needs none, evaluate says it lacks them
    return x, y
