"""Datasets: the digits recipe, the gap set, mnist1d offline, IDX files the tests write, loaders, bad input."""

import gzip
import random
import struct
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from pyro_prune import data
from tests.helpers import assert_close


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_reproduces_the_reference_split(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert digits.dataset_size == 1437 and digits.num_classes == 10
    assert digits.name == "digits" and digits.task == "classification"
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    X, y = sk_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    sc = StandardScaler().fit(xtr)
    assert torch.equal(digits.x_train, torch.tensor(sc.transform(xtr), dtype=torch.float32))
    assert torch.equal(digits.x_test, torch.tensor(sc.transform(xte), dtype=torch.float32))
    assert torch.equal(digits.y_train, torch.tensor(ytr)) and torch.equal(digits.y_test, torch.tensor(yte))
    raw = data.load_digits(standardize=False, dtype=torch.float64)
    assert torch.equal(raw.x_test, torch.tensor(xte)) and raw.x_test.dtype == torch.float64


def test_digits_standardized_with_training_statistics(digits):
    mean, std = digits.x_train.double().mean(0), digits.x_train.double().std(0, unbiased=False)
    constant = std == 0  # pixels that are 0 in every training image stay 0
    assert 0 < int(constant.sum()) < 5
    assert_close(mean, torch.zeros(64, dtype=torch.float64), atol=1e-6)
    assert_close(std[~constant], torch.ones(int((~constant).sum()), dtype=torch.float64), atol=1e-6)
    assert float(digits.x_test.mean(0).abs().max()) > 1e-3  # the test set was not standardized on its own


def test_digits_split_is_stratified(digits):
    _, y = sk_digits(return_X_y=True)
    share = torch.bincount(torch.tensor(y)).double() / len(y)
    for labels in (digits.y_train, digits.y_test):
        counts = torch.bincount(labels, minlength=10).double()
        assert float((counts - share * len(labels)).abs().max()) <= 1.0


def test_digits_deterministic_and_seeded(digits):
    again = data.load_digits()
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)
    other = data.load_digits(seed=1)
    assert not torch.equal(other.y_test, digits.y_test)
    small = data.load_digits(test_size=0.5)
    assert len(small.x_test) == 899 and len(small.x_train) == 898


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"test_size": 0}, ValueError, "test_size"),
        ({"test_size": 1}, ValueError, "test_size"),
        ({"test_size": 1.5}, ValueError, "test_size"),
        ({"test_size": True}, TypeError, "test_size"),  # wrong type: TypeError (pyro_prune._checks)
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 0.5}, TypeError, "seed"),
        ({"dtype": torch.int64}, ValueError, "dtype"),
        ({"dtype": "float32"}, ValueError, "dtype"),
    ],
)
def test_digits_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.load_digits(**kwargs)


# ------------------------------------------------------------------------------------------------------- gap


def test_gap_regression_has_a_gap():
    split = data.load_gap_regression(n=101)
    lo, hi = data.GAP_INTERVAL
    assert (lo, hi) == (-0.5, 0.5)
    x, xt = split.x_train.squeeze(-1), split.x_test.squeeze(-1)
    assert split.x_train.shape == (101, 1) and split.y_train.shape == (101,)
    assert split.x_test.shape == (201, 1) and split.y_test.shape == (201,)
    assert split.task == "regression" and split.num_classes is None and split.name == "gap"
    assert split.x_train.dtype == split.y_train.dtype == torch.float32
    assert not bool(((x > lo) & (x < hi)).any())
    assert int((x < lo).sum()) == 50 and int((x >= hi).sum()) == 51
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    # the test grid covers [-2.5, 2.5], the gap included
    assert int(((xt > lo) & (xt < hi)).sum()) >= 19
    assert float(xt.min()) == -2.5 and float(xt.max()) == 2.5
    assert_close(split.x_test.squeeze(-1), torch.linspace(-2.5, 2.5, 201), atol=1e-6)


def test_gap_regression_targets_and_determinism():
    clean = data.load_gap_regression(n=50, noise=0.0, dtype=torch.float64)
    f = lambda x: torch.sin(3 * x) + 0.3 * x  # noqa: E731
    assert_close(clean.y_train, f(clean.x_train.squeeze(-1)), atol=1e-12)
    assert_close(clean.y_test, f(clean.x_test.squeeze(-1)), atol=1e-12)
    noisy = data.load_gap_regression(n=2000, noise=0.1, dtype=torch.float64)
    residual = noisy.y_train - f(noisy.x_train.squeeze(-1))
    assert abs(float(residual.std()) - 0.1) < 0.01
    a, b = data.load_gap_regression(seed=3), data.load_gap_regression(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, data.load_gap_regression(seed=4).x_train)
    state = torch.get_rng_state()
    data.load_gap_regression()
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not used


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"n": 1}, ValueError, "n must"),
        ({"n": 10.0}, TypeError, "n must"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"noise": float("nan")}, ValueError, "noise"),
        ({"noise": float("inf")}, ValueError, "noise"),
        ({"noise": "0.1"}, TypeError, "noise"),
        ({"n_test": 1}, ValueError, "n_test"),
        ({"dtype": torch.int32}, ValueError, "dtype"),
    ],
)
def test_gap_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.load_gap_regression(**kwargs)


# --------------------------------------------------------------------------------------------------- mnist1d


def test_mnist1d_generated_offline():
    pytest.importorskip("mnist1d")
    py_state, np_state = random.getstate(), np.random.get_state()
    split = data.load_mnist1d(num_samples=200)
    assert random.getstate() == py_state  # the package reseeds the global RNGs; they are restored
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert split.x_train.shape == (160, 1, 40) and split.x_test.shape == (40, 1, 40)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10 and split.name == "mnist1d"
    labels = torch.cat([split.y_train, split.y_test])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 20))
    again = data.load_mnist1d(num_samples=200)
    assert torch.equal(again.x_train, split.x_train)
    other = data.load_mnist1d(num_samples=205, seed=1, train_split=0.5, dtype=torch.float64)
    assert other.x_train.shape == (100, 1, 40) and other.x_test.dtype == torch.float64  # rounded down to 200
    assert data.get_dataset("mnist1d", num_samples=100).x_train.shape == (80, 1, 40)
    with pytest.raises(ValueError, match="num_samples"):
        data.load_mnist1d(num_samples=10)
    with pytest.raises(ValueError, match="train_split"):
        data.load_mnist1d(num_samples=100, train_split=1.0)


def test_mnist1d_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d...` raise ImportError
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="pip install mnist1d"):
        data.load_mnist1d(num_samples=100)


# ------------------------------------------------------------------------------------------------------- IDX

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, arr, gz=False, corrupt=None):
    """Write ``arr`` as an IDX file by hand: 00 00 <type code> <ndim>, big-endian uint32 dims, big-endian data."""
    code = _CODES[arr.dtype.type]
    payload = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if corrupt == "magic":
        payload = b"\x01" + payload[1:]
    elif corrupt == "type":
        payload = payload[:2] + b"\x07" + payload[3:]
    elif corrupt == "truncate":
        payload = payload[:-5]
    elif corrupt == "header":
        payload = payload[:6]
    elif corrupt == "extra":
        payload = payload + b"\x00"
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"images{suffix}", images, gz=gz)
    write_idx(tmp_path / f"labels{suffix}", labels, gz=gz)
    got = data.read_idx(str(tmp_path / f"images{suffix}"))
    assert got.shape == (5, 28, 28) and got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(images))
    got = data.read_idx(tmp_path / f"labels{suffix}")  # a pathlib.Path works too
    assert got.shape == (5,) and torch.equal(got, torch.from_numpy(labels))


@pytest.mark.parametrize("np_dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_other_types(tmp_path, np_dtype):
    scale = 1.5 if np_dtype in (np.float32, np.float64) else 1
    arr = ((np.arange(24).reshape(2, 3, 4) - 11) * scale).astype(np_dtype)
    write_idx(tmp_path / "a.idx", arr)
    got = data.read_idx(tmp_path / "a.idx")
    assert got.dtype == torch.from_numpy(arr).dtype and torch.equal(got, torch.from_numpy(arr))
    got[0, 0, 0] = 1  # a writable copy


def test_idx_gzip_detected_by_content(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "no-suffix", arr, gz=True)
    assert torch.equal(data.read_idx(tmp_path / "no-suffix"), torch.from_numpy(arr))


@pytest.mark.parametrize(
    "corrupt,gz,match",
    [
        ("magic", False, "bad magic number"),
        ("magic", True, "bad magic number"),
        ("type", False, "bad magic number"),
        ("truncate", False, "truncated"),
        ("truncate", True, "truncated"),
        ("header", False, "truncated: its header"),
        ("extra", False, "too long"),
    ],
)
def test_idx_malformed_files(tmp_path, corrupt, gz, match):
    path = tmp_path / f"bad-{corrupt}.idx"
    write_idx(path, np.zeros((2, 3), dtype=np.uint8), gz=gz, corrupt=corrupt)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path)
    assert f"bad-{corrupt}.idx" in str(info.value)


def test_idx_empty_broken_gzip_and_missing(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        data.read_idx(tmp_path / "empty")
    whole = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 1000) + bytes(1000))
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="could not be decompressed"):
        data.read_idx(tmp_path / "cut.gz")
    with pytest.raises(FileNotFoundError, match="none.idx"):
        data.read_idx(tmp_path / "none.idx")


# ----------------------------------------------------------------------------------------------------- MNIST


def write_mnist(folder, n_train=6, n_test=4, seed=1):
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), gz=True)
        write_idx(folder / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))


def test_load_mnist_from_a_local_folder(tmp_path):
    write_mnist(tmp_path)
    split = data.load_mnist(str(tmp_path))
    assert split.x_train.shape == (6, 784) and split.x_test.shape == (4, 784)
    assert split.y_train.dtype == torch.int64 and split.num_classes == 10 and split.name == "mnist"
    assert abs(float(split.x_train.mean())) < 1e-5 and abs(float(split.x_train.std()) - 1) < 1e-5
    raw_labels = data.read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    assert torch.equal(split.y_test, raw_labels.long())
    raw = data.load_mnist(tmp_path, flatten=False, standardize=False, dtype=torch.float64)
    assert raw.x_train.shape == (6, 1, 28, 28) and raw.x_train.dtype == torch.float64
    pixels = data.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert_close(raw.x_train[:, 0], pixels.double() / 255)


def test_load_mnist_missing_files_and_folder(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="lacks train-images-idx3-ubyte.*t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(tmp_path / "nope")


def test_load_mnist_inconsistent_files(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="differ in count"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(4, 12, dtype=np.uint8))
    with pytest.raises(ValueError, match="outside 0-9"):
        data.load_mnist(tmp_path)


# -------------------------------------------------------------------------------------------- get_dataset


def test_get_dataset_dispatches(tmp_path):
    assert data.get_dataset("gap", n=10).name == "gap"
    assert data.get_dataset("digits", test_size=0.5).dataset_size == 898
    write_mnist(tmp_path)
    assert data.get_dataset("mnist", folder=tmp_path, flatten=False).x_test.shape == (4, 1, 28, 28)


def test_get_dataset_bad_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*\['digits', 'gap', 'mnist', 'mnist1d'\]"):
        data.get_dataset("cifar")
    with pytest.raises(ValueError, match="folder="):
        data.get_dataset("mnist")


# ------------------------------------------------------------------------------------------- DataSplit


def test_loaders_shapes_and_order(digits):
    train, test = digits.loaders(batch_size=100, seed=3)
    batches = list(train)
    assert len(batches) == 15 and batches[0][0].shape == (100, 64) and batches[-1][0].shape == (37, 64)
    seen = torch.cat([y for _, y in batches])
    assert torch.equal(seen.sort().values, digits.y_train.sort().values)  # each example once per epoch
    assert not torch.equal(seen, digits.y_train)  # shuffled
    assert torch.equal(torch.cat([x for x, _ in test]), digits.x_test)  # test not shuffled
    plain, _ = digits.loaders(batch_size=100, shuffle=False)
    assert torch.equal(torch.cat([y for _, y in plain]), digits.y_train)


def test_loaders_seeded_shuffling(digits):
    def epochs(seed, n=2):
        train, _ = digits.loaders(batch_size=500, seed=seed)
        return [torch.cat([y for _, y in train]) for _ in range(n)]

    a = epochs(3)
    torch.manual_seed(123)  # the global RNG does not matter
    b = epochs(3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])  # a new order each epoch
    assert not torch.equal(a[0], epochs(4, 1)[0])


@pytest.mark.parametrize(
    "kwargs,error",
    [({"batch_size": 0}, ValueError), ({"batch_size": 2.5}, TypeError), ({"batch_size": True}, TypeError),
     ({"seed": "0"}, TypeError)],
)  # fmt: skip
def test_loaders_bad_arguments(digits, kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        digits.loaders(**kwargs)


def test_to_dtype_and_device(digits):
    d = digits.to(torch.float64)
    assert d is not digits and digits.x_train.dtype == torch.float32
    assert d.x_train.dtype == d.x_test.dtype == torch.float64 and d.y_train.dtype == torch.int64
    assert_close(d.x_train, digits.x_train.double())
    reg = data.load_gap_regression(n=10).to(dtype=torch.float64, device="cpu")
    assert reg.y_train.dtype == torch.float64 and reg.x_train.device.type == "cpu"
    assert digits.to().x_train.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        digits.to(torch.int32)
    if torch.cuda.is_available():
        assert digits.to(device="cuda").x_test.is_cuda


def test_datasplit_validation():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    assert data.DataSplit(x, y, x[:2], y[:2], "toy", "classification", 2).dataset_size == 4
    with pytest.raises(ValueError, match="x_train .* y_train"):
        data.DataSplit(x, y[:3], x, y, "toy", "classification", 2)
    with pytest.raises(ValueError, match="x_test .* y_test"):
        data.DataSplit(x, y, x, y[:3], "toy", "classification", 2)
    with pytest.raises(ValueError, match="task"):
        data.DataSplit(x, y, x, y, "toy", "ranking")
    with pytest.raises(TypeError, match="num_classes"):  # None is not an int
        data.DataSplit(x, y, x, y, "toy", "classification")
    with pytest.raises(ValueError, match="num_classes"):
        data.DataSplit(x, y, x, y, "toy", "classification", 1)
    with pytest.raises(ValueError, match="num_classes"):
        data.DataSplit(x, y.float(), x, y.float(), "toy", "regression", 3)
    with pytest.raises(TypeError, match="x_train"):
        data.DataSplit(x.numpy(), y, x, y, "toy", "classification", 2)


# ------------------------------------------------------------------------------------------- CSV and NPZ tables


def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(str(c) for c in r) for r in rows]) + "\n")
    return path


def test_csv_reads_features_and_infers_classification(tmp_path):
    rows = [[0.5, 1, "3"], [1.5, -2, "5"], [2.5, 0, "3"], [-1.0, 4, "7"]]
    table = data.load_csv(_write_csv(tmp_path / "a.csv", ["f1", "f2", "label"], rows), target="label")
    assert table.task == "classification" and table.num_classes == 3 and table.classes == [3, 5, 7]
    assert table.columns == ["f1", "f2"] and table.target == "label"
    assert torch.equal(table.y, torch.tensor([0, 1, 0, 2]))
    assert_close(table.x, torch.tensor([[0.5, 1.0], [1.5, -2.0], [2.5, 0.0], [-1.0, 4.0]]))
    text = data.load_csv(_write_csv(tmp_path / "b.csv", ["f", "y"], [[1, "cat"], [2, "dog"], [3, "cat"]]), "y")
    assert text.classes == ["cat", "dog"] and torch.equal(text.y, torch.tensor([0, 1, 0]))
    forced = data.load_csv(tmp_path / "a.csv", target="label", task="regression")
    assert forced.task == "regression" and forced.y.dtype == torch.float32 and forced.y.tolist() == [3, 5, 3, 7]
    features_only = data.load_csv(tmp_path / "a.csv", target=None)
    assert features_only.x.shape == (4, 3) and len(features_only.y) == 0


def test_infer_task_rule():
    assert data.infer_task([0, 1, 1, 0]) == "classification"
    assert data.infer_task([0.0, 2.0, 1.0]) == "classification"  # integer values
    assert data.infer_task([0.5, 1.0, 2.0]) == "regression"
    assert data.infer_task(list(range(21))) == "regression"  # more than 20 distinct integers
    assert data.infer_task([1, 1, 1]) == "regression"  # one value is not a class problem
    assert data.infer_task(["a", "b"]) == "classification"
    with pytest.raises(ValueError, match="empty"):
        data.infer_task([])


@pytest.mark.parametrize(
    "rows, target, match",
    [
        ([[1, 2]], "nope", r"no column 'nope'.*\['a', 'b'\]"),
        ([[1, ""]], "a", r"line 2.*\['b'\]"),
        ([["x", 2]], "b", r"line 2.*\['a'\]"),
        ([[1, 2, 3]], "a", "line 2: 3 cells"),
        ([[1, "nan"]], "a", r"\['b'\]"),
    ],
)
def test_csv_bad_cells_are_named(tmp_path, rows, target, match):
    with pytest.raises(ValueError, match=match):
        data.load_csv(_write_csv(tmp_path / "bad.csv", ["a", "b"], rows), target=target)


def test_npz_tables(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    np.savez(tmp_path / "c.npz", x=x, y=np.array([2, 4, 2, 4, 2, 4]))
    table = data.load_npz(tmp_path / "c.npz")
    assert table.task == "classification" and table.classes == [2, 4] and table.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert_close(table.x, torch.tensor(x, dtype=torch.float32))
    assert table.columns == ["x0", "x1"]
    np.savez(tmp_path / "r.npz", x=x, y=np.linspace(0, 1, 6))
    assert data.load_npz(tmp_path / "r.npz").task == "regression"
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(ValueError, match="'x' and 'y'"):
        data.load_npz(tmp_path / "bad.npz")
    assert len(data.load_npz(tmp_path / "bad.npz", need_y=False).y) == 0
    np.savez(tmp_path / "short.npz", x=x, y=np.zeros(5))
    with pytest.raises(ValueError, match="6 rows"):
        data.load_npz(tmp_path / "short.npz")


def test_split_indices_are_disjoint_stratified_and_seeded():
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    train, val, test = data.split_indices(100, [0.2, 0.1], seed=3, stratify=y)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 100
    assert torch.bincount(y[val]).tolist() == [12, 6, 2] and torch.bincount(y[test]).tolist() == [6, 3, 1]
    again = data.split_indices(100, [0.2, 0.1], seed=3, stratify=y)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, val, test)))
    rest, empty = data.split_indices(10, [0.0])
    assert len(rest) == 10 and len(empty) == 0
    with pytest.raises(ValueError, match="sum to less than 1"):
        data.split_indices(10, [0.5, 0.5])


def test_standardizer_matches_sklearn():
    x = torch.randn(50, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 0.0]) + 5
    mean, std = data.standardizer(x)
    sc = StandardScaler().fit(x.numpy())
    assert_close(mean, torch.tensor(sc.mean_))
    assert_close(std, torch.tensor(sc.scale_))
    assert std[3] == 1.0  # a constant feature is only centred


def test_csv_columns_by_name_and_read_column(tmp_path):
    path = _write_csv(tmp_path / "p.csv", ["b", "y", "a"], [[1, "cat", 2], [3, "dog", 4]])
    table = data.load_csv(path, None, columns=["a", "b"])  # the saved order, other columns ignored
    assert table.columns == ["a", "b"] and table.x.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert data.read_column(path, "y") == ["cat", "dog"] and data.read_column(path, "a") == [2.0, 4.0]
    with pytest.raises(ValueError, match="no column 'z'"):
        data.load_csv(path, None, columns=["z"])
