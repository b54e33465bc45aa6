"""Embedded datasets (nothing is downloaded) and a reader for MNIST IDX files in a local folder.

* :func:`load_digits`: scikit-learn's 8×8 digits, standardized, the stratified split of ``../shared/TARGETS.md``;
* :func:`load_gap_regression`: 1-D regression with a gap in the training inputs (in-between uncertainty);
* :func:`load_mnist1d`: the ``mnist1d`` package's local generator (optional extra ``pyro-prune[mnist1d]``);
* :func:`read_idx` / :func:`load_mnist`: IDX files (optionally gzipped) from a folder the user provides.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

__all__ = [
    "DataSplit",
    "load_digits",
    "load_gap_regression",
    "load_mnist1d",
    "read_idx",
    "load_mnist",
    "get_dataset",
    "GAP_INTERVAL",
]

#: Inputs of :func:`load_gap_regression` inside this interval are absent from the training set.
GAP_INTERVAL = (-0.5, 0.5)


@dataclass
class DataSplit:
    """A train/test split of tensors.

    :ivar task: ``"classification"`` or ``"regression"``.
    :ivar num_classes: number of classes (``None`` for regression).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str
    task: str
    num_classes: Optional[int] = None

    @property
    def dataset_size(self) -> int:
        """Number of training examples (the likelihood's ``dataset_size``)."""
        return len(self.x_train)

    def loaders(self, batch_size: int = 64, shuffle: bool = True, seed: int = 0):
        """``(train_loader, test_loader)``; the training loader shuffles with a seeded generator."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        g = torch.Generator().manual_seed(seed)
        train = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(self.x_train, self.y_train),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=g,
        )
        test = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(self.x_test, self.y_test), batch_size=batch_size
        )
        return train, test

    def to(self, dtype: Optional[torch.dtype] = None, device=None) -> DataSplit:
        """A copy with floating-point tensors in ``dtype`` and everything on ``device``."""

        def mv(t):
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)

        return replace(self, x_train=mv(self.x_train), y_train=mv(self.y_train), x_test=mv(self.x_test),
                       y_test=mv(self.y_test))  # fmt: skip


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def load_digits(test_size: float = 0.2, seed: int = 0, standardize: bool = True, dtype=torch.float32) -> DataSplit:
    """scikit-learn's digits: 1,797 8×8 images, split stratified (1437 train / 360 test by default).

    The split is ``train_test_split(X, y, test_size, random_state=seed, stratify=y)`` and the standardization
    is fitted on the training inputs, as in ``../shared/bench/peers.py``.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    _check_fraction("test_size", test_size)
    X, y = _load(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    if standardize:
        sc = StandardScaler().fit(xtr)
        xtr, xte = sc.transform(xtr), sc.transform(xte)
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    return DataSplit(t(xtr), torch.tensor(ytr), t(xte), torch.tensor(yte), "digits", "classification", 10)


def load_gap_regression(n: int = 200, seed: int = 0, noise: float = 0.1, dtype=torch.float32) -> DataSplit:
    """1-D regression, :math:`y = \\sin(3x) + 0.3x + \\varepsilon`, with training inputs in
    :math:`[-2, -0.5] \\cup [0.5, 2]` (no data in :data:`GAP_INTERVAL`) and a test grid over :math:`[-2.5, 2.5]`.

    Inputs have shape ``(n, 1)``, targets ``(n,)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    half = n // 2
    left = -2.0 + 1.5 * torch.rand(half, generator=g, dtype=torch.float64)
    right = 0.5 + 1.5 * torch.rand(n - half, generator=g, dtype=torch.float64)
    x = torch.cat([left, right])
    f = lambda x: torch.sin(3 * x) + 0.3 * x  # noqa: E731
    y = f(x) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    xt = torch.linspace(-2.5, 2.5, 201, dtype=torch.float64)
    yt = f(xt)
    return DataSplit(x[:, None].to(dtype), y.to(dtype), xt[:, None].to(dtype), yt.to(dtype), "gap", "regression")


def load_mnist1d(num_samples: int = 5000, seed: int = 0, train_split: float = 0.8, dtype=torch.float32) -> DataSplit:
    """MNIST-1D (Greydanus 2020) from the ``mnist1d`` package's local generator, shaped ``(N, 1, 40)``."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError("load_mnist1d needs the mnist1d package: pip install mnist1d (or pyro-prune[mnist1d])") from e
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an int >= 20, got {num_samples!r}")
    _check_fraction("train_split", train_split)
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    data = make_dataset(args)
    x = lambda a: torch.tensor(np.asarray(a), dtype=dtype).unsqueeze(1)  # noqa: E731
    yl = lambda a: torch.tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return DataSplit(
        x(data["x"]), yl(data["y"]), x(data["x_test"]), yl(data["y_test"]), "mnist1d", "classification", 10
    )


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> torch.Tensor:
    """Read an IDX file (``.gz`` transparently): magic ``00 00 TT ND``, ``ND`` big-endian int32 sizes, then data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no IDX file at {path!r}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{path!r} could not be read as {'gzip' if path.endswith('.gz') else 'IDX'}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    nd = raw[3]
    header = 4 + 4 * nd
    if len(raw) < header:
        raise ValueError(f"{path!r} is truncated: header needs {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{nd}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path!r}: dimensions {dims} need {expected} data bytes, found {len(raw) - header}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")))


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_mnist(folder: str, flatten: bool = True, standardize: bool = True, dtype=torch.float32) -> DataSplit:
    """MNIST from the four IDX files (plain or ``.gz``) in a local ``folder``; nothing is downloaded.

    Images are scaled to [0, 1], then standardized with the training mean and std (``standardize=True``).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST folder {folder!r} does not exist")
    paths, missing = {}, []
    for key, base in _MNIST_FILES.items():
        for cand in (base, base + ".gz"):
            if os.path.isfile(os.path.join(folder, cand)):
                paths[key] = os.path.join(folder, cand)
                break
        else:
            missing.append(base + "[.gz]")
    if missing:
        raise FileNotFoundError(f"MNIST folder {folder!r} lacks {missing}")
    t = {k: read_idx(p) for k, p in paths.items()}
    for part in ("train", "test"):
        if len(t[f"x_{part}"]) != len(t[f"y_{part}"]):
            raise ValueError(f"{part} images and labels differ in count ({len(t[f'x_{part}'])}, {len(t[f'y_{part}'])})")
    xtr, xte = t["x_train"].to(dtype) / 255.0, t["x_test"].to(dtype) / 255.0
    if standardize:
        mu, sd = xtr.mean(), xtr.std()
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    else:
        xtr, xte = xtr.unsqueeze(1), xte.unsqueeze(1)
    return DataSplit(xtr, t["y_train"].long(), xte, t["y_test"].long(), "mnist", "classification", 10)


def get_dataset(name: str, **kwargs) -> DataSplit:
    """Dispatch by name: ``"digits"``, ``"gap"``, ``"mnist1d"``, ``"mnist"`` (``folder=...``)."""
    loaders = {"digits": load_digits, "gap": load_gap_regression, "mnist1d": load_mnist1d, "mnist": load_mnist}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(loaders)}")
    return loaders[name](**kwargs)
