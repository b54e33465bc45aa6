r"""Datasets that need no download, and a reader for MNIST IDX files in a folder the user provides.

* :func:`load_digits`: scikit-learn's bundled 8×8 digits, a stratified split, standardized with training
  statistics;
* :func:`load_gap_regression`: 1-D regression whose training inputs leave out :data:`GAP_INTERVAL` (to check
  that predictive uncertainty grows "in between" the data [1]);
* :func:`load_mnist1d`: MNIST-1D [2] from the optional ``mnist1d`` package's *local generator* (its
  ``make_dataset``; its ``get_dataset`` would try to download a pickle, so it is not used);
* :func:`read_idx` / :func:`load_mnist`: IDX files (plain or gzipped) such as MNIST's [3]; nothing is fetched.

Every loader returns a :class:`DataSplit` of CPU tensors: inputs in the requested floating ``dtype``, class labels
as ``int64``, regression targets in ``dtype``. Move one with :meth:`DataSplit.to`. Invalid arguments raise
:class:`TypeError` (wrong type) or :class:`ValueError` (bad value) naming the argument.

References

[1] Andrew Y. K. Foong, Yingzhen Li, José Miguel Hernández-Lobato, Richard E. Turner. "'In-Between' Uncertainty
    in Bayesian Neural Networks", ICML 2019 workshop on Uncertainty and Robustness in Deep Learning.
[2] Sam Greydanus, Dmitry Kobak. "Scaling Down Deep Learning with MNIST-1D", ICML 2024.
[3] Yann LeCun, Corinna Cortes, Christopher J. C. Burges. "The MNIST database of handwritten digits"
    (the IDX file format).
"""

from __future__ import annotations

import gzip
import os
import random
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .._checks import check_choice, check_fraction, check_int, check_nonnegative

__all__ = [
    "DataSplit",
    "GAP_INTERVAL",
    "load_digits",
    "load_gap_regression",
    "load_mnist1d",
    "read_idx",
    "load_mnist",
    "get_dataset",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The open interval :math:`(-0.5, 0.5)` that holds no training input of :func:`load_gap_regression`
#: (its test grid does cover it).
GAP_INTERVAL: Tuple[float, float] = (-0.5, 0.5)

#: the tasks a :class:`DataSplit` may have.
TASKS = ("classification", "regression")


@dataclass
class DataSplit:
    """A train/test split of tensors.

    :ivar x_train: training inputs, shape ``(N, ...)``.
    :ivar y_train: training targets, shape ``(N,)``: ``int64`` class labels, or floating regression targets.
    :ivar x_test: test inputs, shape ``(M, ...)``.
    :ivar y_test: test targets, shape ``(M,)``.
    :ivar name: short name of the dataset (``"digits"``, ``"gap"``, ``"mnist1d"``, ``"mnist"``, ...).
    :ivar task: ``"classification"`` or ``"regression"``.
    :ivar num_classes: number of classes; ``None`` for regression.
    :raises ValueError: if inputs and targets differ in length, or ``task``/``num_classes`` are invalid.
    :raises TypeError: if one of the four data fields is not a tensor, or ``num_classes`` is not an int.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str
    task: str
    num_classes: Optional[int] = None

    def __post_init__(self) -> None:
        for field in ("x_train", "y_train", "x_test", "y_test"):
            if not torch.is_tensor(getattr(self, field)):
                raise TypeError(f"{field} must be a torch.Tensor, got {type(getattr(self, field)).__name__}")
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
                raise ValueError(f"x_{part} {tuple(x.shape)} and y_{part} {tuple(y.shape)} must have the same length")
        check_choice("task", self.task, TASKS)
        if self.task == "classification":
            check_int("num_classes", self.num_classes, 2)
        elif self.num_classes is not None:
            raise ValueError(f"num_classes must be None for regression, got {self.num_classes!r}")

    @property
    def dataset_size(self) -> int:
        """Number of training examples, ``len(x_train)`` (what a likelihood's ``dataset_size`` should be)."""
        return len(self.x_train)

    def loaders(self, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> Tuple[DataLoader, DataLoader]:
        r"""Data loaders over :class:`~torch.utils.data.TensorDataset` s of the two parts.

        The training loader shuffles (if ``shuffle``) with its own ``torch.Generator`` seeded by ``seed``, so two
        calls with the same seed yield the same batches epoch after epoch, independently of the global RNG. The
        test loader keeps the order of ``x_test``.

        :param batch_size: examples per batch, :math:`\ge 1`.
        :param shuffle: shuffle the training set each epoch.
        :param seed: seed of the training loader's generator.
        :returns: ``(train_loader, test_loader)`` yielding ``(x, y)`` batches.
        :raises TypeError: if ``batch_size`` or ``seed`` is not an int.
        :raises ValueError: if ``batch_size`` is not positive.
        """
        check_int("batch_size", batch_size, 1)
        check_int("seed", seed)
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(
            TensorDataset(self.x_train, self.y_train), batch_size=batch_size, shuffle=shuffle, generator=generator
        )
        test = DataLoader(TensorDataset(self.x_test, self.y_test), batch_size=batch_size, shuffle=False)
        return train, test

    def to(self, dtype: Optional[torch.dtype] = None, device: Optional[Union[str, torch.device]] = None) -> DataSplit:
        """A new split with floating-point tensors cast to ``dtype`` and all tensors moved to ``device``.

        Integer class labels keep their dtype; floating regression targets follow ``dtype``.

        :param dtype: a floating dtype, or ``None`` to keep the dtypes.
        :param device: a device, or ``None`` to stay put.
        :returns: a new :class:`DataSplit` (``self`` is not modified).
        :raises ValueError: if ``dtype`` is not a floating-point ``torch.dtype``.
        """
        if dtype is not None:
            check_dtype(dtype)

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)

        return replace(
            self, x_train=move(self.x_train), y_train=move(self.y_train), x_test=move(self.x_test),
            y_test=move(self.y_test),
        )  # fmt: skip


def check_dtype(dtype: Any) -> None:
    """Raise ``ValueError`` unless ``dtype`` is a floating-point ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")


def load_digits(
    test_size: float = 0.2, seed: int = 0, standardize: bool = True, dtype: torch.dtype = torch.float32
) -> DataSplit:
    r"""scikit-learn's bundled digits: 1,797 8×8 grey-level images (64 features with values 0–16), 10 classes.

    The split is exactly::

        X, y = sklearn.datasets.load_digits(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)

    (1437 train / 360 test with the defaults), and with ``standardize`` a ``StandardScaler`` fitted on ``Xtr``
    maps both parts, :math:`x \mapsto (x - \hat\mu_{\mathrm{train}}) / \hat\sigma_{\mathrm{train}}` per feature
    (features constant in the training set are only centred).

    :param test_size: fraction of the examples in the test set, in :math:`(0, 1)`.
    :param seed: ``random_state`` of the split.
    :param standardize: standardize the inputs with training statistics.
    :param dtype: floating dtype of the inputs; labels are ``int64``.
    :returns: a classification :class:`DataSplit` named ``"digits"`` with ``x`` of shape ``(N, 64)``.
    :raises TypeError: if ``test_size`` is not a number or ``seed`` not an int.
    :raises ValueError: if ``test_size`` is not in :math:`(0, 1)`, ``seed`` is negative, or ``dtype`` is not
        floating.
    """
    from sklearn.datasets import load_digits as _sklearn_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    check_fraction("test_size", test_size)
    check_int("seed", seed, 0)
    check_dtype(dtype)
    X, y = _sklearn_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    if standardize:
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    return DataSplit(
        torch.as_tensor(xtr, dtype=dtype), torch.as_tensor(ytr, dtype=torch.int64),
        torch.as_tensor(xte, dtype=dtype), torch.as_tensor(yte, dtype=torch.int64),
        name="digits", task="classification", num_classes=10,
    )  # fmt: skip


def _gap_function(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * x) + 0.3 * x


def load_gap_regression(
    n: int = 200, seed: int = 0, noise: float = 0.1, dtype: torch.dtype = torch.float32, n_test: int = 201
) -> DataSplit:
    r"""1-D regression with a gap in the training inputs.

    Training inputs are uniform on the two clusters :math:`[-2, -0.5) \cup [0.5, 2)` (``n // 2`` left,
    the rest right), so none lies in :data:`GAP_INTERVAL` :math:`= (-0.5, 0.5)`; targets are

    .. math::

        y = f(x) + \varepsilon, \qquad f(x) = \sin(3x) + 0.3\,x,
        \qquad \varepsilon \sim \mathcal N(0, \mathrm{noise}^2) .

    The test set is the grid ``linspace(-2.5, 2.5, n_test)``, gap and margins included, with the noise-free
    targets :math:`f(x)` (so the test RMSE measures how well :math:`f` is recovered). Sampling uses its own
    ``torch.Generator`` seeded by ``seed``; the global RNG is untouched.

    :param n: number of training points, :math:`\ge 2`.
    :param seed: seed of the sampler.
    :param noise: standard deviation of the observation noise, :math:`\ge 0`.
    :param dtype: floating dtype of inputs and targets.
    :param n_test: number of test grid points, :math:`\ge 2`.
    :returns: a regression :class:`DataSplit` named ``"gap"``, ``x`` of shape ``(n, 1)``, ``y`` of shape ``(n,)``.
    :raises TypeError: on a non-int ``n``, ``n_test`` or ``seed``, or a non-number ``noise``.
    :raises ValueError: on ``n`` or ``n_test`` < 2, negative or non-finite ``noise``, a negative ``seed`` or a
        non-floating ``dtype``.
    """
    check_int("n", n, 2)
    check_int("n_test", n_test, 2)
    check_int("seed", seed, 0)
    check_nonnegative("noise", noise)
    check_dtype(dtype)
    g = torch.Generator().manual_seed(int(seed))
    half = n // 2
    left = -2.0 + 1.5 * torch.rand(half, generator=g, dtype=torch.float64)
    right = 0.5 + 1.5 * torch.rand(n - half, generator=g, dtype=torch.float64)
    x = torch.cat([left, right])
    y = _gap_function(x) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    x_test = torch.linspace(-2.5, 2.5, n_test, dtype=torch.float64)
    return DataSplit(
        x[:, None].to(dtype), y.to(dtype), x_test[:, None].to(dtype), _gap_function(x_test).to(dtype),
        name="gap", task="regression", num_classes=None,
    )  # fmt: skip


def load_mnist1d(
    num_samples: int = 5000, seed: int = 0, train_split: float = 0.8, dtype: torch.dtype = torch.float32
) -> DataSplit:
    r"""MNIST-1D [2]: 10 classes of 40-sample 1-D signals, generated locally by the ``mnist1d`` package.

    This calls ``mnist1d.data.make_dataset`` (the generator: templates padded, scaled, translated, sheared, with
    correlated and i.i.d. noise), never ``mnist1d.data.get_dataset`` (which downloads or caches a pickle in the
    working directory). ``num_samples // 10`` signals are made per class, so the total is rounded down to a
    multiple of 10; the first ``int(train_split * total)`` of the shuffled signals are the training set. The
    package standardizes the whole set to mean 0 and standard deviation 1. ``make_dataset`` reseeds Python's and
    NumPy's global RNGs; their states are restored afterwards. About 1 s for 4,000 signals.

    :param num_samples: number of signals, :math:`\ge 20` (rounded down to a multiple of 10).
    :param seed: seed of the generator (the package's own default, used for its published pickle, is 42).
    :param train_split: fraction of the signals in the training set, in :math:`(0, 1)`.
    :param dtype: floating dtype of the inputs; labels are ``int64``.
    :returns: a classification :class:`DataSplit` named ``"mnist1d"`` with ``x`` of shape ``(N, 1, 40)`` (a channel
        axis for ``Conv1d``).
    :raises ImportError: if ``mnist1d`` is not installed (``pip install mnist1d`` or ``pip install
        'pyro-prune[mnist1d]'``).
    :raises TypeError: on arguments of the wrong type.
    :raises ValueError: on invalid values.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            f"load_mnist1d needs the optional mnist1d package: pip install mnist1d "
            f"(or pip install 'pyro-prune[mnist1d]'); importing it failed with: {e}"
        ) from e
    check_int("num_samples", num_samples, 20)
    check_int("seed", seed, 0)
    check_fraction("train_split", train_split)
    check_dtype(dtype)
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = int(num_samples), int(seed), float(train_split)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        dataset = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if len(dataset["y"]) == 0 or len(dataset["y_test"]) == 0:
        raise ValueError(f"train_split={train_split} leaves an empty part of {num_samples} samples")

    def inputs(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=dtype).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.int64)

    return DataSplit(
        inputs(dataset["x"]), labels(dataset["y"]), inputs(dataset["x_test"]), labels(dataset["y_test"]),
        name="mnist1d", task="classification", num_classes=10,
    )  # fmt: skip


#: IDX type codes (third magic byte) and the big-endian NumPy dtypes they denote.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> torch.Tensor:
    r"""Read an IDX file, gzipped or not (detected from the gzip magic bytes, not the name).

    The format: a magic number of two zero bytes, a type code (``0x08`` unsigned byte, ``0x09`` signed byte,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64) and the number of dimensions :math:`d`;
    then :math:`d` big-endian 32-bit sizes; then the data, big-endian, in C order.

    :param path: path of the file.
    :returns: a tensor of the file's shape with dtype ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or
        ``float64`` (a writable copy in native byte order).
    :raises FileNotFoundError: if ``path`` is not a file.
    :raises ValueError: if the file is not valid IDX: bad magic number or type code, a truncated header, or a data
        size that does not match the dimensions (the message names the path).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no IDX file at {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path!r} looks gzipped but could not be decompressed: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: bad magic number {raw[:4].hex() or '(empty file)'} "
            f"(expected 0000 then a type code in {[hex(c) for c in _IDX_TYPES]} and the number of dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path!r} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise ValueError(f"{path!r} is {what}: dimensions {dims} need {expected} data bytes, found {found}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_mnist(
    folder: PathLike, flatten: bool = True, standardize: bool = True, dtype: torch.dtype = torch.float32
) -> DataSplit:
    r"""MNIST (or Fashion-MNIST, which uses the same names) from the four IDX files in a local folder.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each plain or with a ``.gz`` suffix (a plain file wins). Nothing is downloaded.
    Pixels are scaled to :math:`[0, 1]` and, with ``standardize``, mapped by
    :math:`x \mapsto (x - \hat\mu)/\hat\sigma` with the scalar mean and standard deviation of all training pixels.

    :param folder: the folder holding the files.
    :param flatten: inputs of shape ``(N, H·W)`` (784 for MNIST) if true, else ``(N, 1, H, W)`` for ``Conv2d``.
    :param standardize: standardize with training statistics.
    :param dtype: floating dtype of the inputs; labels are ``int64``.
    :returns: a classification :class:`DataSplit` named ``"mnist"`` with 10 classes.
    :raises FileNotFoundError: if ``folder`` does not exist or lacks some of the files (all missing ones are listed).
    :raises ValueError: if a file is malformed (see :func:`read_idx`), images are not 3-D, counts of images and
        labels differ, or labels are outside 0–9.
    """
    check_dtype(dtype)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST folder {folder!r} does not exist")
    paths: Dict[str, str] = {}
    missing = []
    for key, base in _MNIST_FILES.items():
        for candidate in (base, base + ".gz"):
            if os.path.isfile(os.path.join(folder, candidate)):
                paths[key] = os.path.join(folder, candidate)
                break
        else:
            missing.append(base + "[.gz]")
    if missing:
        raise FileNotFoundError(f"MNIST folder {folder!r} lacks {', '.join(missing)} (no download is attempted)")
    t = {key: read_idx(p) for key, p in paths.items()}
    for part in ("train", "test"):
        x, y = t[f"x_{part}"], t[f"y_{part}"]
        if x.dim() != 3:
            raise ValueError(f"{paths[f'x_{part}']!r} must hold images of shape (N, H, W), got {tuple(x.shape)}")
        if y.dim() != 1 or len(x) != len(y):
            raise ValueError(f"{part} images {tuple(x.shape)} and labels {tuple(y.shape)} differ in count")
        if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
            raise ValueError(f"{paths[f'y_{part}']!r} has labels outside 0-9")
    xtr, xte = t["x_train"].to(dtype) / 255.0, t["x_test"].to(dtype) / 255.0
    if standardize:
        mu, sd = xtr.mean(), xtr.std()
        sd = sd if float(sd) > 0 else torch.ones_like(sd)
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    else:
        xtr, xte = xtr.unsqueeze(1), xte.unsqueeze(1)
    return DataSplit(xtr, t["y_train"].long(), xte, t["y_test"].long(), "mnist", "classification", 10)


_LOADERS: Dict[str, Callable[..., DataSplit]] = {
    "digits": load_digits,
    "gap": load_gap_regression,
    "mnist1d": load_mnist1d,
    "mnist": load_mnist,
}


def get_dataset(name: str, **kwargs: Any) -> DataSplit:
    """Load a dataset by name.

    :param name: ``"digits"`` (:func:`load_digits`), ``"gap"`` (:func:`load_gap_regression`), ``"mnist1d"``
        (:func:`load_mnist1d`) or ``"mnist"`` (:func:`load_mnist`, which needs ``folder=...``).
    :param kwargs: keyword arguments of that loader.
    :returns: the :class:`DataSplit`.
    :raises ValueError: for an unknown name (the message lists the choices), or ``"mnist"`` without ``folder``.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(_LOADERS)}")
    if name == "mnist" and "folder" not in kwargs:
        raise ValueError("get_dataset('mnist') needs folder=<a folder with the four MNIST IDX files>")
    return _LOADERS[name](**kwargs)
