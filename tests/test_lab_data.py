"""The lab's data sets: digits' fixed stratified split, MNIST's IDX and CIFAR-10's pickle
readers (on tiny files the tests write) with their refusals, and the shared mini-batches."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from adamkit.lab import data

ROWS = {"train": 5, "test": 3}


def standardised(train: np.ndarray, test: np.ndarray, peak: float) -> tuple:
    """What the module documents: scale to [0, 1], then per channel the train split's mean
    and population std, applied to both splits (computed here independently in float64)."""
    train, test = train.astype(np.float64) / peak, test.astype(np.float64) / peak
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return (train - mean) / std, (test - mean) / std


def names(path: Path) -> str:
    """A pattern matching the full path of a file in an error message."""
    return re.escape(str(path))


# ---------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_size():
    dataset = data.digits()
    assert dataset.name == "digits" and dataset.classes == 10
    assert dataset.train_x.dtype == torch.float32 and dataset.test_x.dtype == torch.float32
    assert dataset.train_y.dtype == torch.int64 and dataset.test_y.dtype == torch.int64
    assert dataset.train_x.shape[1:] == (1, 8, 8) and dataset.test_x.shape[1:] == (1, 8, 8)
    assert len(dataset.train_x) == len(dataset.train_y)
    assert len(dataset.test_x) == len(dataset.test_y)
    assert len(dataset.train_y) + len(dataset.test_y) == 1797


def test_digits_split_is_disjoint_complete_and_stratified():
    labels = load_digits().target
    train, test = data.stratified_split(labels, 0.25, 0)
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    dataset = data.digits()
    for label in range(10):
        total = int((labels == label).sum())
        in_test = int((dataset.test_y == label).sum())
        in_train = int((dataset.train_y == label).sum())
        assert in_train + in_test == total
        assert abs(in_test - 0.25 * total) <= 1


def test_digits_split_is_deterministic_and_follows_the_seed():
    labels = load_digits().target
    first, second = data.stratified_split(labels, 0.25, 0), data.stratified_split(labels, 0.25, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = data.stratified_split(labels, 0.25, 1)
    assert not np.array_equal(first[1], other[1])
    torch.manual_seed(123)  # global state must not matter
    data.digits.cache_clear()
    again = data.digits()
    torch.manual_seed(456)
    data.digits.cache_clear()
    assert torch.equal(again.test_y, data.digits().test_y)
    assert torch.equal(again.train_x, data.digits().train_x)
    assert data.digits() is data.digits()  # cached


def test_digits_are_the_bundled_images_standardised_with_train_statistics():
    bunch = load_digits()
    dataset = data.digits()
    train_x = dataset.train_x.double()
    means = train_x.mean(dim=(0, 2, 3))
    stds = train_x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(means, torch.zeros(1, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(stds, torch.ones(1, dtype=torch.float64), atol=1e-5)
    train, test = data.stratified_split(bunch.target, 0.25, 0)
    images = bunch.images[:, None]
    expected_train, expected_test = standardised(images[train], images[test], 16)
    assert np.allclose(dataset.train_x.numpy(), expected_train, atol=1e-5)
    assert np.allclose(dataset.test_x.numpy(), expected_test, atol=1e-5)
    assert np.array_equal(dataset.train_y.numpy(), bunch.target[train])
    assert np.array_equal(dataset.test_y.numpy(), bunch.target[test])


def test_digits_refuses_a_bad_test_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.0)


# ---------------------------------------------------------------- MNIST


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    """An IDX file: big-endian magic and dims, then ``payload``; gzip when ``path`` ends .gz."""
    content = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def write_mnist(folder: Path, compress: bool = False) -> dict[str, np.ndarray]:
    """Tiny valid MNIST files: random pixels, test image 0 black but for pixel (2, 5)."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    written = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(ROWS[split], 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=ROWS[split], dtype=np.uint8)
        if split == "test":
            images[0] = 0
            images[0, 2, 5] = 255
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{suffix}",
            0x803,
            images.shape,
            images.tobytes(),
        )
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte{suffix}", 0x801, labels.shape, labels.tobytes()
        )
        written[f"{split}_images"], written[f"{split}_labels"] = images, labels
    return written


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_mnist_reads_what_was_written(tmp_path, compress):
    written = write_mnist(tmp_path, compress)
    dataset = data.mnist(tmp_path)
    assert dataset.name == "mnist" and dataset.classes == 10
    assert dataset.train_x.shape == (5, 1, 28, 28) and dataset.test_x.shape == (3, 1, 28, 28)
    assert dataset.train_x.dtype == torch.float32 and dataset.train_y.dtype == torch.int64
    assert dataset.train_y.tolist() == written["train_labels"].tolist()
    assert dataset.test_y.tolist() == written["test_labels"].tolist()
    expected_train, expected_test = standardised(
        written["train_images"][:, None], written["test_images"][:, None], 255
    )
    assert np.allclose(dataset.train_x.numpy(), expected_train, atol=1e-5)
    assert np.allclose(dataset.test_x.numpy(), expected_test, atol=1e-5)
    bright = dataset.test_x[0, 0]
    assert divmod(int(bright.argmax()), 28) == (2, 5)
    assert int((bright == bright.max()).sum()) == 1


def test_mnist_accepts_a_mix_of_plain_and_gzip_files(tmp_path):
    written = write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels.read_bytes()))
    labels.unlink()
    assert data.mnist(tmp_path).test_y.tolist() == written["test_labels"].tolist()


def corrupt_truncated(folder: Path) -> Path:
    file = folder / "train-images-idx3-ubyte"
    file.write_bytes(file.read_bytes()[:-1000])
    return file


def corrupt_over_long(folder: Path) -> Path:
    file = folder / "t10k-images-idx3-ubyte"
    file.write_bytes(file.read_bytes() + b"\x00")
    return file


def corrupt_magic(folder: Path) -> Path:
    file = folder / "train-images-idx3-ubyte"
    file.write_bytes(struct.pack(">I", 0x801) + file.read_bytes()[4:])
    return file


def corrupt_size(folder: Path) -> Path:
    file = folder / "train-images-idx3-ubyte"
    return write_idx(file, 0x803, (5, 27, 28), bytes(5 * 27 * 28))


def corrupt_count(folder: Path) -> Path:
    file = folder / "train-labels-idx1-ubyte"
    return write_idx(file, 0x801, (4,), bytes(4))


def corrupt_label(folder: Path) -> Path:
    file = folder / "t10k-labels-idx1-ubyte"
    return write_idx(file, 0x801, (3,), bytes([1, 11, 2]))


def corrupt_gzip(folder: Path) -> Path:
    file = folder / "train-labels-idx1-ubyte"
    packed = folder / "train-labels-idx1-ubyte.gz"
    packed.write_bytes(gzip.compress(file.read_bytes())[:-8])
    file.unlink()
    return packed


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (corrupt_truncated, "truncated"),
        (corrupt_over_long, "too long"),
        (corrupt_magic, "magic"),
        (corrupt_size, "28×28"),
        (corrupt_count, "4 labels for 5 images"),
        (corrupt_label, "label 11"),
        (corrupt_gzip, "gzip"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_mnist_refuses_a_bad_file_and_names_it(tmp_path, corrupt, problem):
    write_mnist(tmp_path)
    file = corrupt(tmp_path)
    with pytest.raises(ValueError, match=names(file)) as error:
        data.mnist(tmp_path)
    assert problem in str(error.value)


def test_mnist_truncated_message_counts_the_bytes(tmp_path):
    write_mnist(tmp_path)
    corrupt_truncated(tmp_path)
    with pytest.raises(ValueError, match=rf"expected {5 * 28 * 28} bytes .* found {3920 - 1000}"):
        data.mnist(tmp_path)


def test_mnist_refuses_a_missing_file_and_names_it(tmp_path):
    write_mnist(tmp_path)
    missing = tmp_path / "t10k-labels-idx1-ubyte"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=names(missing)):
        data.mnist(tmp_path)


# ---------------------------------------------------------------- CIFAR-10


def py2_pickle(batch: dict) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) wrote the real CIFAR-10 files: byte strings
    as STRING opcodes and ``numpy.core.multiarray._reconstruct``."""

    def string(value: bytes) -> bytes:
        return b"T" + struct.pack("<I", len(value)) + value

    array = batch[b"data"]
    rows, columns = array.shape
    out = b"\x80\x02}("
    out += string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b")
    out += b"\x87R(K\x01" + struct.pack("<cicic", b"J", rows, b"J", columns, b"\x86")
    out += b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + string(array.tobytes()) + b"tb"
    out += string(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in batch[b"labels"])
    out += b"eu."
    return out


def write_batch(file: Path, images: np.ndarray, labels: list, protocol: int | str = 4) -> None:
    """A CIFAR-10 batch pickle: a dict with b"data" (N, 3072) and b"labels" and the real
    files' other keys."""
    batch = {
        b"batch_label": file.name.encode(),
        b"labels": labels,
        b"data": images,
        b"filenames": [f"{index}.png".encode() for index in range(len(labels))],
    }
    if protocol == "py2":
        file.write_bytes(py2_pickle(batch))
    else:
        file.write_bytes(pickle.dumps(batch, protocol=protocol))


def write_cifar(folder: Path, protocol: int | str = 4) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 batches (2 rows each, 3 for test): random pixels, test image 0 black
    but for red pixel (1, 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    train_images, train_labels = [], []
    for number in range(1, 6):
        images = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, 10, size=2)]
        write_batch(folder / f"data_batch_{number}", images, labels, protocol)
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_images[0] = 0
    test_images[0, 0 * 1024 + 1 * 32 + 2] = 255
    test_labels = [9, 0, 4]
    write_batch(folder / "test_batch", test_images, test_labels, protocol)
    return {
        "train_images": np.concatenate(train_images),
        "train_labels": np.array(train_labels),
        "test_images": test_images,
        "test_labels": np.array(test_labels),
    }


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_reads_what_was_written(tmp_path, protocol):
    written = write_cifar(tmp_path, protocol)
    dataset = data.cifar10(tmp_path)
    assert dataset.name == "cifar10" and dataset.classes == 10
    assert dataset.train_x.shape == (10, 3, 32, 32) and dataset.test_x.shape == (3, 3, 32, 32)
    assert dataset.train_x.dtype == torch.float32 and dataset.test_y.dtype == torch.int64
    assert dataset.train_y.tolist() == written["train_labels"].tolist()
    assert dataset.test_y.tolist() == written["test_labels"].tolist()
    red, green, blue = dataset.test_x[0]
    assert divmod(int(red.argmax()), 32) == (1, 2)
    assert int((red == red.max()).sum()) == 1
    assert int(green.unique().numel()) == 1 and int(blue.unique().numel()) == 1
    planes = written["train_images"].reshape(10, 3, 1024)
    expected_train, expected_test = standardised(
        np.stack([planes[:, channel].reshape(10, 32, 32) for channel in range(3)], axis=1),
        written["test_images"].reshape(3, 3, 32, 32),
        255,
    )
    assert np.allclose(dataset.train_x.numpy(), expected_train, atol=1e-5)
    assert np.allclose(dataset.test_x.numpy(), expected_test, atol=1e-5)


def test_cifar10_accepts_the_parent_folder(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    assert data.cifar10(tmp_path).test_y.tolist() == written["test_labels"].tolist()
    assert data.load("cifar10", str(tmp_path)).train_x.shape == (10, 3, 32, 32)


class Custom:
    """A class a batch may not name."""


class OpensAFile:
    """Unpickling this opens (creates) ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class RunsACommand:
    """Unpickling this runs a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize(
    ("payload", "culprit"),
    [
        (lambda marker: OpensAFile(marker), "open"),
        (lambda marker: RunsACommand(marker), "system"),
        (lambda marker: os.system, "system"),
        (lambda marker: Custom(), "Custom"),
    ],
    ids=["open", "os.system call", "os.system reference", "custom class"],
)
def test_cifar10_refuses_a_disallowed_global_without_running_it(tmp_path, payload, culprit):
    write_cifar(tmp_path)
    marker = tmp_path / "marker"
    file = tmp_path / "data_batch_3"
    images = np.zeros((2, 3072), dtype=np.uint8)
    file.write_bytes(pickle.dumps({b"data": images, b"labels": [0, 1], b"x": payload(marker)}))
    with pytest.raises(ValueError, match=names(file)) as error:
        data.cifar10(tmp_path)
    assert "not allowed" in str(error.value) and culprit in str(error.value)
    assert not marker.exists()


def write_garbage(file: Path) -> None:
    file.write_bytes(b"this is not a pickle at all")


def write_truncated(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:2000])


def write_columns(file: Path) -> None:
    write_batch(file, np.zeros((2, 3071), dtype=np.uint8), [0, 1])


def write_count(file: Path) -> None:
    write_batch(file, np.zeros((2, 3072), dtype=np.uint8), [0, 1, 2])


def write_label(file: Path) -> None:
    write_batch(file, np.zeros((2, 3072), dtype=np.uint8), [0, 10])


def write_float(file: Path) -> None:
    write_batch(file, np.zeros((2, 3072), dtype=np.float32), [0, 1])


def write_list(file: Path) -> None:
    file.write_bytes(pickle.dumps([np.zeros((2, 3072), dtype=np.uint8), [0, 1]]))


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (write_garbage, "not a CIFAR-10 batch"),
        (write_truncated, "not a CIFAR-10 batch"),
        (write_columns, "3071 columns"),
        (write_count, "3 labels for 2 images"),
        (write_label, "outside 0–9"),
        (write_float, "uint8"),
        (write_list, "not a dict"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_cifar10_refuses_a_bad_batch_and_names_it(tmp_path, corrupt, problem):
    write_cifar(tmp_path)
    file = tmp_path / "test_batch"
    corrupt(file)
    with pytest.raises(ValueError, match=names(file)) as error:
        data.cifar10(tmp_path)
    assert problem in str(error.value)


def test_cifar10_refuses_a_missing_batch_and_names_it(tmp_path):
    write_cifar(tmp_path)
    missing = tmp_path / "data_batch_5"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=names(missing)):
        data.cifar10(tmp_path)


# ---------------------------------------------------------------- load


def test_load_dispatches_and_checks_the_path(tmp_path):
    assert data.load("digits", None) is data.digits()
    written = write_mnist(tmp_path)
    assert data.load("mnist", tmp_path).train_y.tolist() == written["train_labels"].tolist()
    with pytest.raises(ValueError, match="--data"):
        data.load("digits", tmp_path)
    for name in ("mnist", "cifar10"):
        with pytest.raises(ValueError, match="--data PATH"):
            data.load(name, None)
    with pytest.raises(ValueError, match="digits, mnist1d, mnist, cifar10"):
        data.load("imagenet", None)
    assert data.load("mnist1d", None) is data.mnist1d()
    with pytest.raises(ValueError, match="--data"):
        data.load("mnist1d", tmp_path)


def test_mnist1d_is_generated_on_the_machine_and_leaves_the_global_rngs_alone():
    """The mnist1d package's default data set (4 000 / 1 000 sequences of 40, ten balanced
    classes), standardised with the train split's statistics, as (n, 1, 1, 40); generating
    it leaves numpy's and Python's global random state where it was."""
    import random

    data.mnist1d.cache_clear()
    np.random.seed(7)
    random.seed(7)
    dataset = data.mnist1d()
    assert (np.random.random(), random.random()) == (
        np.random.RandomState(7).random_sample(),
        random.Random(7).random(),
    )
    assert dataset.train_x.shape == (4000, 1, 1, 40) and dataset.test_x.shape == (1000, 1, 1, 40)
    assert dataset.train_x.dtype == torch.float32 and dataset.classes == 10
    assert abs(dataset.train_x.mean().item()) < 1e-5
    assert dataset.train_x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    counts = torch.bincount(torch.cat([dataset.train_y, dataset.test_y]), minlength=10)
    assert counts.tolist() == [500] * 10


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize(
    ("n", "size", "sizes"), [(10, 3, [3, 3, 3, 1]), (8, 4, [4, 4]), (5, 9, [5])]
)
def test_batches_cover_every_index_once(n, size, sizes):
    parts = data.batches(n, size, torch.Generator().manual_seed(0))
    assert [len(part) for part in parts] == sizes
    assert all(part.dtype == torch.int64 for part in parts)
    assert sorted(torch.cat(parts).tolist()) == list(range(n))


def test_batches_follow_the_generator():
    def draw(seed: int) -> list:
        return [part.tolist() for part in data.batches(50, 8, torch.Generator().manual_seed(seed))]

    torch.manual_seed(1)
    first = draw(3)
    torch.manual_seed(2)  # global state must not matter
    assert draw(3) == first
    assert draw(4) != first
    assert torch.cat([torch.tensor(part) for part in first]).tolist() != list(range(50))


def test_batches_edge_cases():
    assert data.batches(0, 4, torch.Generator()) == []
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(4, 0, torch.Generator())
