"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN read from disk in torchvision's layout.

One loader, `load_vision(name, ...)`, serves them all; `SOURCES` maps each name
(configs/dataset/<name>.yaml says `name: <name>`) to where its files live and how to read them.

The files themselves are parsed in readers.py (idx via torchvision's own readers, CIFAR
pickles via an array-only unpickler, SVHN .mat via scipy). We do not go through
torchvision's dataset classes: CIFAR10/100 and SVHN re-check md5 sums on every start (slow,
and they reject any file they did not write), CIFAR `pickle.load`s the batches, which
executes whatever a tampered file asks for, and MNIST wants the unpacked files only.

torchvision is also used for `download=true`: it knows the mirrors and checksums, and its
layout on disk is exactly the one we read, so a folder fetched by torchvision elsewhere
works here too.

Every dataset comes as images shaped (N, C, H, W), long labels, and a validation split
carved (stratified) from the official training split; the official test split stays the
test split. The training split stays uint8 in memory (CIFAR-10's 45,000 images: 138 MB
instead of 553 MB as float32), on the device; the loaders turn each batch into float32 in
[0, 1] (`data.as_float`), where the batch is formed. Val and test are float32 in [0, 1]:
techniques score them with their own loops (attacks, FID), and they are the smaller part.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from ..registry import DATASETS
from .readers import RawData, one_line, present, read_cifar, read_mnist_like, read_svhn
from .splits import DataError, DataInfo, DataSplits, channel_stats, stratified_split, take_subset

FIX_HINT = "run with dataset.download=true, or point dataset.root / PDL_DATA_ROOT at it"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


# --------------------------------------------------------------------------------------
# Shared by every image loader (image_folder.py uses these too; `one_line` lives in
# readers.py, which needs it and must not import this module)
# --------------------------------------------------------------------------------------

Pair = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, C, H, W), long labels)


def resolve_root(root: str | os.PathLike) -> str:
    """Absolute path, so error messages name the real directory whatever the cwd."""
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise DataError(f"dataset.{name}={value} must be in [0, 1)")


def to_unit_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (of val and test; train batches: `data.as_float`)."""
    return x_u8.to(torch.float32).div_(255.0)


def assemble_splits(
    name: str,
    train: Pair,
    val: Pair,
    test: Pair,
    class_names: list[str],
    subset: int | None,
    seed: int,
    extra: dict | None = None,
) -> DataSplits:
    """uint8 splits -> DataSplits: train kept uint8 (converted per batch by the loaders), val
    and test as float in [0, 1], the stats of the (subset) train split in [0, 1] units.
    """
    x_train, y_train = take_subset(train[0], train[1], subset, seed)
    x_train = x_train.contiguous()
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


@dataclass(frozen=True)
class _Source:
    name: str  # DataInfo.name; matches configs/dataset/<name>.yaml
    title: str  # how the dataset is called in messages
    subdir: str  # directory under root that holds the files (torchvision's layout)
    files: tuple[str, ...]  # files that must be there
    read: Callable[[str], RawData]  # directory -> official splits
    fetch: Callable[[str], None]  # root -> downloads the files via torchvision
    gz_ok: bool = False  # a file may also be present as <file>.gz


def _first_missing(src: _Source, directory: str) -> str | None:
    return next((f for f in src.files if present(directory, f, src.gz_ok) is None), None)


def _missing_error(src: _Source, directory: str, filename: str) -> DataError:
    alt = f" (or {filename}.gz)" if src.gz_ok else ""
    return DataError(f"{src.title} not found: expected {filename}{alt} in {directory}; {FIX_HINT}")


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
    name: str, raw: RawData, val_fraction: float, subset: int | None, seed: int
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


# --------------------------------------------------------------------------------------
# The datasets, and the one loader: locate the files, maybe download, read, split
# --------------------------------------------------------------------------------------

_DIGIT_NAMES = [str(i) for i in range(10)]

_IDX_FILES = tuple(
    f"{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
)

_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

SOURCES: dict[str, _Source] = {
    src.name: src
    for src in (
        _Source(
            name="mnist",
            title="MNIST",
            subdir=os.path.join("MNIST", "raw"),
            files=_IDX_FILES,
            gz_ok=True,
            read=partial(read_mnist_like, class_names=_DIGIT_NAMES),
            fetch=_torchvision_fetcher("MNIST", {"train": True}, {"train": False}),
        ),
        _Source(
            name="fashion_mnist",
            title="Fashion-MNIST",
            subdir=os.path.join("FashionMNIST", "raw"),
            files=_IDX_FILES,
            gz_ok=True,
            # The idx format has no class names; these are the dataset's published ones.
            read=partial(read_mnist_like, class_names=FASHION_MNIST_CLASSES),
            fetch=_torchvision_fetcher("FashionMNIST", {"train": True}, {"train": False}),
        ),
        _Source(
            name="cifar10",
            title="CIFAR-10",
            subdir="cifar-10-batches-py",
            files=_CIFAR10_TRAIN + ("test_batch", "batches.meta"),
            read=partial(
                read_cifar,
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
                read_cifar,
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
            read=read_svhn,
            fetch=_torchvision_fetcher("SVHN", {"split": "train"}, {"split": "test"}),
        ),
    )
}


@DATASETS.register("vision", kind="image")
def load_vision(
    name: str,
    root: str = "data",
    download: bool = False,
    val_fraction: float = 0.1,
    subset: int | None = None,
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
