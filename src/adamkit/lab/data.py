"""The lab's data sets: scikit-learn's bundled digits, MNIST-1D, MNIST and CIFAR-10.

Nothing downloads at run time. ``digits`` ships with scikit-learn; ``mnist1d`` (Greydanus &
Kobak, ICML 2024) is generated on the machine by the ``mnist1d`` package; MNIST and CIFAR-10
are read from a folder the user already has (``--data PATH``): MNIST's four IDX files, optionally
gzip-compressed, and CIFAR-10's python pickle batches, read with a restricted unpickler that
rebuilds numpy arrays and nothing else.

Every data set comes back as a :class:`Dataset` of float32 images (n, C, H, W), scaled to
[0, 1] and then standardised per channel with the train split's mean and (population) standard
deviation, the same statistics applied to the test split (kept, so that
:meth:`Dataset.pixels` gives the [0, 1] images back); labels are int64.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR_TEST = "test_batch"
KNOWN = ("digits", "mnist1d", "mnist", "cifar10")


@dataclass(frozen=True)
class Dataset:
    """A classification data set, both splits standardised with the train split's statistics
    ``mean`` and ``std`` (per channel; the std of a constant channel is taken as 1).

    The tensors are shared (``digits`` is cached): do not modify them in place.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def pixels(self, images: Tensor) -> Tensor:
        """Standardised ``images`` of this data set back in [0, 1] (a new tensor), e.g. as
        the Bernoulli targets of a VAE (Kingma & Welling 2013)."""
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, -1, 1, 1)
        return (images * std + mean).clamp_(0, 1)


def standardise(train: Tensor, test: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Standardise (n, C, H, W) images in place per channel with ``train``'s mean and
    population std (a constant channel is only centred); returns the means and the stds
    divided by (1 for a constant channel)."""
    means, stds = [], []
    for channel in range(train.shape[1]):
        values = train[:, channel]
        mean = values.mean(dtype=torch.float64)
        std = (values - mean.float()).square().mean(dtype=torch.float64).sqrt()
        scale = std.item() if std.item() > 0 else 1.0
        for images in (train, test):
            images[:, channel].sub_(mean.item()).div_(scale)
        means.append(mean.item())
        stds.append(scale)
    return tuple(means), tuple(stds)


def _dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    peak: float,
) -> Dataset:
    """A standardised :class:`Dataset` from numpy images (n, C, H, W) in [0, ``peak``] and
    labels."""
    train_x = torch.from_numpy(np.asarray(train[0], dtype=np.float32) / np.float32(peak))
    test_x = torch.from_numpy(np.asarray(test[0], dtype=np.float32) / np.float32(peak))
    train_x, test_x = train_x.contiguous(), test_x.contiguous()
    mean, std = standardise(train_x, test_x)
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=torch.from_numpy(np.asarray(train[1], dtype=np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(np.asarray(test[1], dtype=np.int64)),
        classes=10,
        mean=mean,
        std=std,
    )


# ---------------------------------------------------------------- digits


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: within each class a seeded permutation, the first
    ``round(count * test_fraction)`` (at least 1, at most count − 1) going to test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = torch.randperm(len(members), generator=generator).numpy()
        cut = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        test.append(members[order[:cut]])
        train.append(members[order[cut:]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=8)
def digits(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1 797 images, values 0–16), shape (n, 1, 8, 8),
    with a fixed stratified split determined by ``split_seed``. Cached."""
    from sklearn.datasets import load_digits  # the lab's dependency, not the library's

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(labels, test_fraction, split_seed)
    return _dataset("digits", (images[train], labels[train]), (images[test], labels[test]), 16)


# ---------------------------------------------------------------- MNIST


def _read_bytes(folder: Path, name: str) -> tuple[Path, bytes]:
    """The contents of ``folder/name``, or of ``folder/name.gz`` decompressed, and the path
    read."""
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.is_file():
        return plain, plain.read_bytes()
    if packed.is_file():
        try:
            return packed, gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{packed}: not a valid gzip file ({error})") from error
    raise FileNotFoundError(f"{plain}: no such file (nor {packed.name})")


def parse_idx(file: Path, content: bytes, magic: int, ndim: int) -> tuple[tuple[int, ...], bytes]:
    """The dims and the uint8 data of an IDX file's ``content``, checked against the expected
    magic number and number of dims; errors name ``file``."""
    if len(content) < 4 + 4 * ndim:
        raise ValueError(f"{file}: truncated: {len(content)} bytes, shorter than the header")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise ValueError(f"{file}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(
        int.from_bytes(content[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(ndim)
    )
    data = content[4 + 4 * ndim :]
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise ValueError(
            f"{file}: truncated: expected {expected} bytes of data for dims {dims}, "
            f"found {len(data)}"
        )
    if len(data) > expected:
        raise ValueError(
            f"{file}: too long: expected {expected} bytes of data for dims {dims}, "
            f"found {len(data)}"
        )
    return dims, data


def _mnist_images(folder: Path, name: str) -> np.ndarray:
    """An IDX image file as uint8 (n, 1, 28, 28)."""
    file, content = _read_bytes(folder, name)
    dims, data = parse_idx(file, content, IMAGES_MAGIC, 3)
    if dims[1:] != (28, 28):
        raise ValueError(f"{file}: images are {dims[1]}×{dims[2]}, expected 28×28")
    if dims[0] == 0:
        raise ValueError(f"{file}: holds no images")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims[0], 1, 28, 28)


def _mnist_labels(folder: Path, name: str, count: int) -> np.ndarray:
    """An IDX label file as uint8 (n,), checked to hold ``count`` labels in 0–9."""
    file, content = _read_bytes(folder, name)
    (length,), data = parse_idx(file, content, LABELS_MAGIC, 1)
    if length != count:
        raise ValueError(f"{file}: {length} labels for {count} images")
    labels = np.frombuffer(data, dtype=np.uint8)
    if labels.max(initial=0) > 9:
        raise ValueError(f"{file}: label {int(labels.max())} outside 0–9")
    return labels


def mnist(path: str | os.PathLike) -> Dataset:
    """MNIST from the four IDX files in the folder ``path`` (each possibly ``.gz``), shape
    (n, 1, 28, 28)."""
    folder = Path(path)
    train_images = _mnist_images(folder, MNIST_FILES["train_images"])
    test_images = _mnist_images(folder, MNIST_FILES["test_images"])
    train_labels = _mnist_labels(folder, MNIST_FILES["train_labels"], len(train_images))
    test_labels = _mnist_labels(folder, MNIST_FILES["test_labels"], len(test_images))
    return _dataset("mnist", (train_images, train_labels), (test_images, test_labels), 255)


# ---------------------------------------------------------------- CIFAR-10


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch may name: what rebuilds an ndarray (under numpy 1's
    and numpy 2's module names) and ``_codecs.encode`` (bytes in pickles of protocol < 3)."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _Refused(ValueError):
    """A pickle names a global that is not allowed."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def __init__(self, file: Any, name: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        """The allowed global ``module.name``; anything else is refused."""
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{self.name}: global {module}.{name} not allowed") from None


def _unpickle(file: Path) -> Any:
    """The object pickled in ``file``, through :class:`RestrictedUnpickler`."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    with file.open("rb") as stream:
        try:
            return RestrictedUnpickler(stream, file).load()
        except _Refused:
            raise
        except Exception as error:  # any unpickling failure: garbage or truncated
            raise ValueError(f"{file}: not a CIFAR-10 batch ({error!r})") from error


def cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch as uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    batch = _unpickle(file)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{file}: not a dict with keys b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{file}: b'data' is not a 2-d uint8 numpy array")
    if data.shape[1] != 3072:
        raise ValueError(f"{file}: b'data' has {data.shape[1]} columns, expected 3072")
    if not isinstance(labels, list) or not all(type(label) is int for label in labels):
        raise ValueError(f"{file}: b'labels' is not a list of ints")
    if len(labels) != len(data):
        raise ValueError(f"{file}: {len(labels)} labels for {len(data)} images")
    if any(not 0 <= label <= 9 for label in labels):
        raise ValueError(f"{file}: a label outside 0–9")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def cifar10(path: str | os.PathLike) -> Dataset:
    """CIFAR-10 from the python batches in ``path`` (the ``cifar-10-batches-py`` folder or its
    parent), shape (n, 3, 32, 32), channels R, G, B."""
    folder = Path(path)
    if (folder / CIFAR_FOLDER).is_dir():
        folder = folder / CIFAR_FOLDER
    parts = [cifar_batch(folder / name) for name in CIFAR_TRAIN]
    train = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    test = cifar_batch(folder / CIFAR_TEST)
    return _dataset("cifar10", train, test, 255)


# ---------------------------------------------------------------- MNIST-1D


@functools.lru_cache(maxsize=1)
def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus & Kobak, *Scaling Down Deep Learning with MNIST-1D*, ICML 2024):
    the ten digits as 1-D templates of 12 points, padded, translated, scaled, sheared and
    given correlated and i.i.d. noise, down-sampled to 40 points; generated procedurally by
    the ``mnist1d`` package with its default arguments (seed 42: 4 000 training and 1 000
    test sequences), no download. Shape (n, 1, 1, 40), so that every classifier's builder
    takes it. Small models leave room between methods here that digits does not (the
    authors' MLP ≈ 68 %, CNN ≈ 94 % test accuracy). The generator seeds numpy's and
    Python's global random state; both are restored afterwards."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    states = np.random.get_state(), random.getstate()
    try:
        made = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    length = made["x"].shape[1]
    train = (made["x"].reshape(-1, 1, 1, length), made["y"])
    test = (made["x_test"].reshape(-1, 1, 1, length), made["y_test"])
    return _dataset("mnist1d", train, test, 1)


# ---------------------------------------------------------------- choosing and batching


def load(name: str, path: str | os.PathLike | None) -> Dataset:
    """The data set ``name``: "digits" (bundled) or "mnist1d" (generated), ``path`` None;
    "mnist" or "cifar10" (read from ``path``)."""
    if name in ("digits", "mnist1d"):
        if path is not None:
            raise ValueError(f"{name} needs no files: --data PATH is not used")
        return digits() if name == "digits" else mnist1d()
    if name in ("mnist", "cifar10"):
        if path is None:
            raise ValueError(f"{name} is read from disk: --data PATH is needed")
        return mnist(path) if name == "mnist" else cifar10(path)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(KNOWN)}")


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """The index tensors of one epoch's mini-batches: a permutation of range(n) drawn from
    ``generator``, cut in pieces of ``batch_size`` (the last possibly smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if n == 0:
        return []
    return list(torch.randperm(n, generator=generator).split(batch_size))
