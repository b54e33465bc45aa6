"""Embedded datasets, the IDX reader on files the test writes, loaders, bad input."""

import gzip
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from pyro_prune import data
from tests.helpers import assert_close


def test_digits_reproduces_the_reference_split():
    split = data.load_digits()
    assert split.x_train.shape == (1437, 64) and split.x_test.shape == (360, 64)
    assert split.dataset_size == 1437 and split.num_classes == 10 and split.y_train.dtype == torch.int64
    X, y = sk_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    sc = StandardScaler().fit(xtr)
    assert_close(split.x_train, torch.tensor(sc.transform(xtr), dtype=torch.float32))
    assert_close(split.x_test, torch.tensor(sc.transform(xte), dtype=torch.float32))
    assert torch.equal(split.y_test, torch.tensor(yte))
    # stratified: every class has 36 test examples (+-1)
    counts = torch.bincount(split.y_test)
    assert counts.min() >= 35 and counts.max() <= 37


def test_loaders_seeded_and_shaped():
    split = data.load_digits()
    a, _ = split.loaders(batch_size=50, seed=3)
    b, test = split.loaders(batch_size=50, seed=3)
    xa, ya = next(iter(a))
    xb, yb = next(iter(b))
    assert torch.equal(ya, yb) and xa.shape == (50, 64)
    assert torch.equal(next(iter(test))[1], split.y_test[:50])
    with pytest.raises(ValueError, match="batch_size"):
        split.loaders(batch_size=0)
    d = split.to(torch.float64)
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.int64


def test_gap_regression_has_a_gap():
    split = data.load_gap_regression(n=100)
    lo, hi = data.GAP_INTERVAL
    x = split.x_train.squeeze(-1)
    assert split.x_train.shape == (100, 1) and split.y_train.shape == (100,)
    assert not ((x > lo) & (x < hi)).any()
    xt = split.x_test.squeeze(-1)
    assert ((xt > lo) & (xt < hi)).sum() > 10 and xt.min() < -2 and xt.max() > 2
    assert split.task == "regression"
    with pytest.raises(ValueError, match="n must"):
        data.load_gap_regression(n=1)


def test_mnist1d_generator_offline():
    pytest.importorskip("mnist1d")
    split = data.load_mnist1d(num_samples=200)
    assert split.x_train.shape == (160, 1, 40) and split.x_test.shape == (40, 1, 40)
    assert split.y_train.dtype == torch.int64 and int(split.y_train.max()) <= 9


def _write_idx(path, arr, code=0x08, gz=False, corrupt=None):
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if corrupt == "magic":
        payload = b"\x01" + payload[1:]
    if corrupt == "truncate":
        payload = payload[:-5]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    p = str(tmp_path / ("img.idx" + (".gz" if gz else "")))
    _write_idx(p, img, gz=gz)
    assert torch.equal(data.read_idx(p), torch.from_numpy(img))
    ints = rng.integers(-1000, 1000, (3, 4)).astype(np.int32)
    q = str(tmp_path / "ints.idx")
    _write_idx(q, ints, code=0x0C)
    assert torch.equal(data.read_idx(q), torch.from_numpy(ints))


def test_idx_errors(tmp_path):
    img = np.zeros((2, 3), dtype=np.uint8)
    bad = str(tmp_path / "bad.idx")
    _write_idx(bad, img, corrupt="magic")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bad)
    short = str(tmp_path / "short.idx")
    _write_idx(short, img, corrupt="truncate")
    with pytest.raises(ValueError, match="bytes"):
        data.read_idx(short)
    with pytest.raises(FileNotFoundError):
        data.read_idx(str(tmp_path / "none.idx"))


def test_load_mnist_from_local_folder(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("t10k", 4)):
        _write_idx(str(tmp_path / f"{name}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
                   gz=True)  # fmt: skip
        _write_idx(str(tmp_path / f"{name}-labels-idx1-ubyte"), rng.integers(0, 10, (n,)).astype(np.uint8))
    split = data.load_mnist(str(tmp_path))
    assert split.x_train.shape == (6, 784) and split.x_test.shape == (4, 784)
    assert abs(float(split.x_train.mean())) < 1e-5
    img = data.load_mnist(str(tmp_path), flatten=False)
    assert img.x_train.shape == (6, 1, 28, 28)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        data.load_mnist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(str(tmp_path / "nope"))


def test_get_dataset_and_bad_arguments():
    assert data.get_dataset("gap", n=10).name == "gap"
    with pytest.raises(ValueError, match="choose one of"):
        data.get_dataset("cifar")
    with pytest.raises(ValueError, match="test_size"):
        data.load_digits(test_size=1.5)
