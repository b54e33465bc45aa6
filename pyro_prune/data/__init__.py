"""Data: embedded datasets that need no download (:mod:`.embedded`) and your own CSV/NPZ files (:mod:`.tables`).

``pp.data.load_digits()``, ``load_gap_regression``, ``load_mnist1d``, ``read_idx``/``load_mnist`` and
``get_dataset(name)`` return a :class:`DataSplit`; ``load_csv``/``load_npz`` return a :class:`Table`, split by
``split_indices`` and standardized by ``standardizer`` (fitted on training rows only).
"""

from .embedded import (
    GAP_INTERVAL,
    TASKS,
    DataSplit,
    check_dtype,
    get_dataset,
    load_digits,
    load_gap_regression,
    load_mnist,
    load_mnist1d,
    read_idx,
)
from .tables import Table, infer_task, load_csv, load_npz, read_column, split_indices, standardizer

__all__ = [
    "DataSplit",
    "GAP_INTERVAL",
    "TASKS",
    "check_dtype",
    "load_digits",
    "load_gap_regression",
    "load_mnist1d",
    "read_idx",
    "load_mnist",
    "get_dataset",
    "Table",
    "infer_task",
    "load_csv",
    "load_npz",
    "read_column",
    "split_indices",
    "standardizer",
]
