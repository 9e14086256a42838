"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN read from disk in torchvision's layout.

One loader, `load_vision(name, ...)`, serves them all; `SOURCES` maps each name
(configs/dataset/<name>.yaml says `name: <name>`) to where its files live and how to read them.

The MNIST family's idx files are parsed by torchvision's own readers (`read_image_file`,
`read_label_file`); a file present only as .gz is unpacked to a temporary file first, as
those readers take a plain path. We still do not go through torchvision's dataset classes:
CIFAR10/100 and SVHN re-check md5 sums on every start (slow, and they reject any file they
did not write), CIFAR `pickle.load`s the batches, which executes whatever a tampered file
asks for, and MNIST wants the unpacked files only. Here the CIFAR pickles go through an
unpickler that can only rebuild numpy arrays, and SVHN's .mat files are read with scipy.

torchvision is also used for `download=true`: it knows the mirrors and checksums, and its
layout on disk is exactly the one we read, so a folder fetched by torchvision elsewhere
works here too.

Every dataset comes as float32 images in [0, 1] shaped (N, C, H, W), long labels, and a
validation split carved (stratified) from the official training split; the official
test split stays the test split.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tempfile
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from . import DataError, DataInfo, DataSplits, channel_stats, stratified_split, take_subset

FIX_HINT = "run with dataset.download=true, or point dataset.root / PDL_DATA_ROOT at it"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


# --------------------------------------------------------------------------------------
# Shared by every image loader (image_folder.py uses these too)
# --------------------------------------------------------------------------------------

Pair = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, C, H, W), long labels)


def resolve_root(root: str | os.PathLike) -> str:
    """Absolute path, so error messages name the real directory whatever the cwd."""
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as a single short line: messages must fit one line of a log."""
    text = " ".join(str(err).split()) or "no details"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise DataError(f"dataset.{name}={value} must be in [0, 1)")


def to_unit_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]. The only uint8 -> float conversion of a split."""
    return x_u8.to(torch.float32).div_(255.0)


def assemble_splits(
    name: str,
    train: Pair,
    val: Pair,
    test: Pair,
    class_names: list[str],
    subset: Optional[int],
    seed: int,
    extra: Optional[dict] = None,
) -> DataSplits:
    """uint8 splits -> DataSplits with float images and stats of the (subset) train split.

    The subset is taken while still uint8 so images that are dropped never get converted,
    and each split is converted once, straight from its uint8 slice.
    """
    x_train, y_train = take_subset(train[0], train[1], subset, seed)
    x_train = to_unit_float(x_train)
    mean, std = channel_stats(x_train)
    info = DataInfo(
        name=name,
        in_shape=tuple(x_train.shape[1:]),
        num_classes=len(class_names),
        mean=mean,
        std=std,
        class_names=list(class_names),
        extra=dict(extra or {}),
    )
    return DataSplits(
        (x_train, y_train),
        (to_unit_float(val[0]), val[1]),
        (to_unit_float(test[0]), test[1]),
        info,
    )


# --------------------------------------------------------------------------------------
# What every dataset shares: locating its files, downloading, splitting
# --------------------------------------------------------------------------------------


class RawData(NamedTuple):
    """What a format reader returns: the official splits as numpy uint8 / int64."""

    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]


@dataclass(frozen=True)
class _Source:
    name: str  # DataInfo.name; matches configs/dataset/<name>.yaml
    title: str  # how the dataset is called in messages
    subdir: str  # directory under root that holds the files (torchvision's layout)
    files: tuple[str, ...]  # files that must be there
    read: Callable[[str], RawData]  # directory -> official splits
    fetch: Callable[[str], None]  # root -> downloads the files via torchvision
    gz_ok: bool = False  # a file may also be present as <file>.gz


def _present(directory: str, filename: str, gz_ok: bool) -> Optional[str]:
    """Path of the file (or of its .gz when allowed), None when neither exists."""
    path = os.path.join(directory, filename)
    if os.path.isfile(path):
        return path
    if gz_ok and os.path.isfile(path + ".gz"):
        return path + ".gz"
    return None


def _first_missing(src: _Source, directory: str) -> Optional[str]:
    return next((f for f in src.files if _present(directory, f, src.gz_ok) is None), None)


def _missing_error(src: _Source, directory: str, filename: str) -> DataError:
    alt = f" (or {filename}.gz)" if src.gz_ok else ""
    return DataError(
        f"{src.title} not found: expected {filename}{alt} in {directory}; {FIX_HINT}"
    )


def _download(src: _Source, root: str, directory: str) -> None:
    try:
        os.makedirs(root, exist_ok=True)
        src.fetch(root)
    except Exception as err:  # network, disk, checksum: all end up as one clear line
        # `from None`: the user needs the reason, not a page of urllib internals.
        raise DataError(
            f"could not download {src.title} into {directory} ({one_line(err)}); "
            f"check the network, or place the files there yourself and set "
            f"dataset.root / PDL_DATA_ROOT"
        ) from None


def _torchvision_fetcher(class_name: str, *split_kwargs: dict) -> Callable[[str], None]:
    """root -> instantiates torchvision.datasets.<class_name>(root, download=True, **kw)
    once per split, which fetches (and md5-checks) the files into the layout we read.
    torchvision then loads the files itself, which is safe here: it only does so after
    the checksums matched the official release."""

    def fetch(root: str) -> None:
        import torchvision.datasets  # lazy: only the download path needs it

        cls = getattr(torchvision.datasets, class_name)
        for kwargs in split_kwargs:
            cls(root, download=True, **kwargs)

    return fetch


def _split_official(
    name: str, raw: RawData, val_fraction: float, subset: Optional[int], seed: int
) -> DataSplits:
    """Validation is carved out of the official train split; the official test stays."""
    x = torch.from_numpy(raw.train_x)
    y = torch.from_numpy(raw.train_y)
    val_idx, train_idx = stratified_split(y, (val_fraction,), seed)
    return assemble_splits(
        name,
        train=(x[train_idx], y[train_idx]),
        val=(x[val_idx], y[val_idx]),
        test=(torch.from_numpy(raw.test_x), torch.from_numpy(raw.test_y)),
        class_names=raw.class_names,
        subset=subset,
        seed=seed,
    )


def _corrupt(path: str, why: str) -> DataError:
    return DataError(
        f"{path} is corrupt or truncated ({why}); delete it and download again"
    )


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


def _run_idx_reader(
    reader: Callable[[str], torch.Tensor], plain: str, shown: str
) -> np.ndarray:
    """reader(plain) as numpy; its failures name `shown`, the file the user has."""
    try:
        return reader(plain).numpy()
    except AssertionError:  # torchvision asserts on a header that is not idx's
        raise _corrupt(shown, "not an idx file") from None
    except Exception as err:  # wrong dtype/dims (Type/ValueError), size mismatch (RuntimeError)
        raise _corrupt(shown, one_line(err)) from None


def _read_idx_pair(
    directory: str, prefix: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    # lazy: importing torchvision costs start-up time that only these datasets need
    from torchvision.datasets.mnist import read_image_file, read_label_file

    image_path = _present(directory, f"{prefix}-images-idx3-ubyte", gz_ok=True)
    label_path = _present(directory, f"{prefix}-labels-idx1-ubyte", gz_ok=True)
    images = _read_idx(image_path, read_image_file)  # uint8 (N, H, W)
    labels = _read_idx(label_path, read_label_file)  # int64 (N,)
    if len(images) != len(labels):
        raise _corrupt(label_path, f"{len(labels)} labels for {len(images)} images")
    images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    return images, _checked_labels(labels, num_classes, label_path)


def _read_mnist_like(directory: str, class_names: list[str]) -> RawData:
    train = _read_idx_pair(directory, "train", len(class_names))
    test = _read_idx_pair(directory, "t10k", len(class_names))
    return RawData(*train, *test, class_names)


_IDX_FILES = tuple(
    f"{split}-{kind}-ubyte"
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)


# --------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: Python pickles, read through an array-only unpickler
# --------------------------------------------------------------------------------------


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


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


def _read_cifar_batch(
    path: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
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


def _read_cifar(
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


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


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


def _read_svhn(directory: str) -> RawData:
    train = _read_svhn_mat(os.path.join(directory, "train_32x32.mat"))
    test = _read_svhn_mat(os.path.join(directory, "test_32x32.mat"))
    return RawData(*train, *test, [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------
# The datasets, and the one loader: locate the files, maybe download, read, split
# --------------------------------------------------------------------------------------

_DIGIT_NAMES = [str(i) for i in range(10)]

SOURCES: dict[str, _Source] = {
    src.name: src
    for src in (
        _Source(
            name="mnist",
            title="MNIST",
            subdir=os.path.join("MNIST", "raw"),
            files=_IDX_FILES,
            gz_ok=True,
            read=partial(_read_mnist_like, class_names=_DIGIT_NAMES),
            fetch=_torchvision_fetcher("MNIST", {"train": True}, {"train": False}),
        ),
        _Source(
            name="fashion_mnist",
            title="Fashion-MNIST",
            subdir=os.path.join("FashionMNIST", "raw"),
            files=_IDX_FILES,
            gz_ok=True,
            # The idx format has no class names; these are the dataset's published ones.
            read=partial(_read_mnist_like, class_names=FASHION_MNIST_CLASSES),
            fetch=_torchvision_fetcher("FashionMNIST", {"train": True}, {"train": False}),
        ),
        _Source(
            name="cifar10",
            title="CIFAR-10",
            subdir="cifar-10-batches-py",
            files=_CIFAR10_TRAIN + ("test_batch", "batches.meta"),
            read=partial(
                _read_cifar,
                train_files=_CIFAR10_TRAIN,
                test_file="test_batch",
                meta_file="batches.meta",
                label_key="labels",
                names_key="label_names",
            ),
            fetch=_torchvision_fetcher("CIFAR10", {"train": True}, {"train": False}),
        ),
        _Source(
            name="cifar100",
            title="CIFAR-100",
            subdir="cifar-100-python",  # fine labels (100 classes); coarse ones unused
            files=("train", "test", "meta"),
            read=partial(
                _read_cifar,
                train_files=("train",),
                test_file="test",
                meta_file="meta",
                label_key="fine_labels",
                names_key="fine_label_names",
            ),
            fetch=_torchvision_fetcher("CIFAR100", {"train": True}, {"train": False}),
        ),
        _Source(
            name="svhn",
            title="SVHN",
            subdir="",  # torchvision puts the .mat files directly in root; no 'extra' split
            files=("train_32x32.mat", "test_32x32.mat"),
            read=_read_svhn,
            fetch=_torchvision_fetcher("SVHN", {"split": "train"}, {"split": "test"}),
        ),
    )
}


def load_vision(
    name: str,
    root: str = "data",
    download: bool = False,
    val_fraction: float = 0.1,
    subset: Optional[int] = None,
    seed: int = 0,
) -> DataSplits:
    """The dataset `name` (a key of SOURCES) from its torchvision folder under root.

    mnist / fashion_mnist: root/{MNIST,FashionMNIST}/raw, idx files plain or .gz, 1x28x28.
    cifar10 / cifar100: root/cifar-10-batches-py, root/cifar-100-python, 3x32x32.
    svhn: root/{train,test}_32x32.mat (no 'extra' split), 3x32x32.
    10 classes each, but cifar100: 100 (its fine labels).
    """
    src = SOURCES.get(name)
    if src is None:
        raise DataError(f"dataset.name={name!r}: expected one of {', '.join(SOURCES)}")
    check_fraction("val_fraction", val_fraction)
    root = resolve_root(root)
    directory = os.path.join(root, src.subdir) if src.subdir else root
    missing = _first_missing(src, directory)
    if missing is not None:
        if not download:
            raise _missing_error(src, directory, missing)
        _download(src, root, directory)
        missing = _first_missing(src, directory)
        if missing is not None:
            raise DataError(
                f"{src.title} download finished but {missing} is still missing in "
                f"{directory}; delete that directory and download again"
            )
    raw = src.read(directory)
    return _split_official(src.name, raw, val_fraction, subset, seed)
