"""On-disk format readers: each turns a dataset's files into `RawData` (numpy uint8 images
(N, C, H, W), int64 labels, class names), with every failure one `DataError` line naming
the file.

- MNIST / Fashion-MNIST: idx files, plain or .gz, parsed by torchvision's `read_image_file`
  / `read_label_file` (a .gz is unpacked to a temporary file first: they take a path).
- CIFAR-10 / CIFAR-100: the Python pickles, loaded through a restricted unpickler that can
  rebuild numpy arrays only (plain `pickle.load` runs whatever a tampered file asks for;
  this one refuses any other global, so such a file cannot run code).
- SVHN: the .mat files, read with scipy.

Nothing here imports vision.py (it imports this module), so helpers both need live here.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import tempfile
import zlib
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from .splits import DataError

# --------------------------------------------------------------------------------------
# Shared by the readers (vision.py uses one_line, present and RawData too)
# --------------------------------------------------------------------------------------


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as a single short line: messages must fit one line of a log."""
    text = " ".join(str(err).split()) or "no details"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"


class RawData(NamedTuple):
    """What a format reader returns: the official splits as numpy uint8 / int64."""

    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]


def present(directory: str, filename: str, gz_ok: bool) -> str | None:
    """Path of the file (or of its .gz when allowed), None when neither exists."""
    path = os.path.join(directory, filename)
    if os.path.isfile(path):
        return path
    if gz_ok and os.path.isfile(path + ".gz"):
        return path + ".gz"
    return None


def _corrupt(path: str, why: str) -> DataError:
    return DataError(f"{path} is corrupt or truncated ({why}); delete it and download again")


def _checked_labels(labels: np.ndarray, num_classes: int, path: str) -> np.ndarray:
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _corrupt(path, f"labels outside 0..{num_classes - 1}")
    return labels


# --------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: idx files, optionally gzipped, parsed by torchvision
# --------------------------------------------------------------------------------------


def _gunzip(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:  # bad gzip header, truncated stream
        raise _corrupt(path, one_line(err)) from None


def _read_idx(path: str, reader: Callable[[str], torch.Tensor]) -> np.ndarray:
    """An idx file (plain or .gz) through torchvision's `reader`, errors as one DataError line."""
    if not path.endswith(".gz"):
        return _run_idx_reader(reader, path, path)
    data = _gunzip(path)
    with tempfile.TemporaryDirectory(prefix="pdl-idx-") as tmp:
        plain = os.path.join(tmp, os.path.basename(path)[: -len(".gz")])
        try:
            with open(plain, "wb") as f:
                f.write(data)
        except OSError as err:
            raise DataError(
                f"could not unpack {path} into {tmp} ({one_line(err)}); "
                f"free space there, set TMPDIR, or unpack the file next to it yourself"
            ) from None
        del data
        return _run_idx_reader(reader, plain, path)


def _run_idx_reader(reader: Callable[[str], torch.Tensor], plain: str, shown: str) -> np.ndarray:
    """reader(plain) as numpy; its failures name `shown`, the file the user has."""
    try:
        return reader(plain).numpy()
    except AssertionError:  # torchvision asserts on a header that is not idx's
        raise _corrupt(shown, "not an idx file") from None
    except Exception as err:  # wrong dtype/dims (Type/ValueError), size mismatch (RuntimeError)
        raise _corrupt(shown, one_line(err)) from None


def _required(directory: str, filename: str) -> str:
    """present(..., gz_ok=True), or a DataError when neither the file nor its .gz is there."""
    path = present(directory, filename, gz_ok=True)
    if path is None:
        raise DataError(f"{filename} (or {filename}.gz) not found in {directory}")
    return path


def _read_idx_pair(directory: str, prefix: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    # lazy: importing torchvision costs start-up time that only these datasets need
    from torchvision.datasets.mnist import read_image_file, read_label_file

    image_path = _required(directory, f"{prefix}-images-idx3-ubyte")
    label_path = _required(directory, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(image_path, read_image_file)  # uint8 (N, H, W)
    labels = _read_idx(label_path, read_label_file)  # int64 (N,)
    if len(images) != len(labels):
        raise _corrupt(label_path, f"{len(labels)} labels for {len(images)} images")
    images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    return images, _checked_labels(labels, num_classes, label_path)


def read_mnist_like(directory: str, class_names: list[str]) -> RawData:
    train = _read_idx_pair(directory, "train", len(class_names))
    test = _read_idx_pair(directory, "t10k", len(class_names))
    return RawData(*train, *test, class_names)


# --------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: Python pickles, read through an array-only unpickler
# --------------------------------------------------------------------------------------


def _numpy_reconstruct():
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        multiarray = importlib.import_module("numpy.core.multiarray")
    return multiarray._reconstruct


# The only globals an array-in-a-dict pickle needs. Anything else (os.system, a class
# with a malicious __reduce__, ...) is refused before it can be called.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,  # files from numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,  # files from numpy 2.x
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        # latin1: the CIFAR files were written by Python 2; latin1 is the decoding numpy
        # needs for the array bytes inside them. Keys may still come back as bytes.
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise DataError(
                f"refusing to load {self.path}: it references {module}.{name}, and only "
                f"numpy arrays are allowed in a dataset file; replace it with the official file"
            )
        return factory()


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _safe_unpickle(path: str) -> dict[str, object]:
    """A pickled dict of arrays/lists, with keys as str whether written by Python 2 or 3."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as err:  # truncated or garbage data raises all kinds of errors
        raise _corrupt(path, one_line(err)) from None
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a dict, got {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _field(d: dict, key: str, path: str):
    if key not in d:
        raise _corrupt(path, f"no '{key}' entry")
    return d[key]


def _read_cifar_batch(path: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _safe_unpickle(path)
    data = _field(d, "data", path)
    labels = np.asarray(_field(d, label_key, path))
    is_rows = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    if not (is_rows and data.shape[1] == 3 * 32 * 32):
        raise _corrupt(path, "'data' is not a uint8 array of 3x32x32 rows")
    if labels.shape != (len(data),):
        raise _corrupt(path, f"{labels.size} labels for {len(data)} images")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), so this is already CHW.
    return data.reshape(-1, 3, 32, 32), _checked_labels(labels, num_classes, path)


def read_cifar(
    directory: str,
    train_files: tuple[str, ...],
    test_file: str,
    meta_file: str,
    label_key: str,
    names_key: str,
) -> RawData:
    meta_path = os.path.join(directory, meta_file)
    class_names = [_text(n) for n in _field(_safe_unpickle(meta_path), names_key, meta_path)]
    read = partial(_read_cifar_batch, label_key=label_key, num_classes=len(class_names))
    train = [read(os.path.join(directory, f)) for f in train_files]
    test_x, test_y = read(os.path.join(directory, test_file))
    return RawData(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        class_names,
    )


# --------------------------------------------------------------------------------------
# SVHN: MATLAB files
# --------------------------------------------------------------------------------------


def _read_svhn_mat(path: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat  # lazy: only SVHN needs scipy

    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as err:
        raise _corrupt(path, one_line(err)) from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise _corrupt(path, "expected variables X and y")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise _corrupt(path, f"X should be uint8 (H, W, 3, N), got {x.dtype} {x.shape}")
    if y.size != x.shape[3]:
        raise _corrupt(path, f"{y.size} labels for {x.shape[3]} images")
    y = y.reshape(-1).astype(np.int64)
    y[y == 10] = 0  # SVHN stores digit 0 as label 10
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return x, _checked_labels(y, 10, path)


def read_svhn(directory: str) -> RawData:
    train = _read_svhn_mat(os.path.join(directory, "train_32x32.mat"))
    test = _read_svhn_mat(os.path.join(directory, "test_32x32.mat"))
    return RawData(*train, *test, [str(i) for i in range(10)])
