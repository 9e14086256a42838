"""Datasets as in-memory tensors, split into train/val/test, batched without per-sample work.

Every loader (`digits.load_digits`, `vision.load_vision`, ...) returns a `DataSplits`
(splits.py) and registers itself in `registry.DATASETS` with the kind of data it gives; the
config's `dataset._target_` names the loader, so a user's own loader plugs in the same way.
Importing this package imports every loader (the registry lists them all). Batches come
from loaders.py (`TensorLoader`), augmentation from augment.py.
"""

from __future__ import annotations

from . import digits, image_folder, mnist5k, sequences, synthetic, vision  # noqa: F401  (each registers itself)
from .loaders import FixedBatches, LimitedLoader, TensorLoader, first_batches, limit_batches, limit_count
from .splits import DataError, DataInfo, DataSplits, as_float, channel_stats, stratified_split, take_subset

__all__ = [
    "DataError",
    "DataInfo",
    "DataSplits",
    "FixedBatches",
    "LimitedLoader",
    "TensorLoader",
    "as_float",
    "channel_stats",
    "first_batches",
    "limit_batches",
    "limit_count",
    "stratified_split",
    "take_subset",
]
