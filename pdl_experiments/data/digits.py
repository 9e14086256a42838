"""scikit-learn's bundled 8x8 handwritten digits: the default dataset, no network needed."""

from __future__ import annotations

import torch

from ..compat import declare
from . import DataInfo, DataSplits, channel_stats, stratified_split, take_subset


@declare("image")
def load_digits(
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    # Pixels are 0..16 in the file; the project works in [0, 1] so epsilons are in pixels.
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
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
