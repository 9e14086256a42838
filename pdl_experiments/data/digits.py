"""scikit-learn's bundled 8x8 handwritten digits: the default dataset, no network needed."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..registry import DATASETS
from .splits import DataInfo, DataSplits, channel_stats, stratified_split, take_subset


@DATASETS.register("digits", kind="image")
def load_digits(
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    images, target = _read_digits()
    # Pixels are 0..16 in the file; the project works in [0, 1] so epsilons are in pixels.
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(target, dtype=torch.long)
    test_idx, val_idx, train_idx = stratified_split(y, (test_fraction, val_fraction), seed)
    x_train, y_train = take_subset(x[train_idx], y[train_idx], subset, seed)
    mean, std = channel_stats(x_train)
    info = DataInfo(
        name="digits",
        in_shape=(1, 8, 8),
        num_classes=10,
        mean=mean,
        std=std,
        class_names=[str(i) for i in range(10)],
    )
    return DataSplits((x_train, y_train), (x[val_idx], y[val_idx]), (x[test_idx], y[test_idx]), info)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 8, 8) and labels of the file scikit-learn ships, read as
    sklearn.datasets.load_digits reads it (the same arrays) without importing scikit-learn,
    whose import costs seconds of every run's start-up."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sk_digits  # a layout we do not know

        bunch = sk_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
