"""Learnable synthetic images in the shapes users graduate to: no files, no network.

`dataset=synthetic dataset.shape=cifar10 dataset.n_train=50000` gives CIFAR-10-shaped data
(3x32x32, 10 classes) generated from the seed: each class is a smooth random colour pattern;
an image is its class's pattern, shifted by a few pixels, scaled in contrast, plus Gaussian
pixel noise. A small CNN learns it in an epoch or two, so runs, benchmarks and GPU checks at
scale need no download. Shapes: digits (1x8x8), mnist (1x28x28), cifar10 (3x32x32),
imagenet64 (3x64x64).

Held like the real image sets (vision.assemble_splits): the training split as uint8, val and
test as float in [0, 1]. Each split has a generator of its own, so n_train changes the
training split only (val and test stay the same images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import DATASETS
from .splits import DataError, DataSplits
from .vision import assemble_splits

SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet64": (3, 64, 64),
}
_CHUNK = 4096  # images generated at a time (float32 working memory: 4096 x 3x64x64 = 200 MB)


@DATASETS.register("synthetic", kind="image")
def load_synthetic(
    shape: str = "cifar10",
    n_train: int = 5000,
    n_val: int = 1000,
    n_test: int = 1000,
    num_classes: int = 10,
    noise: float = 0.2,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    if shape not in SHAPES:
        raise DataError(f"dataset.shape={shape!r}: expected one of {', '.join(SHAPES)}")
    if num_classes < 2:
        raise DataError(f"dataset.num_classes={num_classes} must be at least 2")
    if noise < 0:
        raise DataError(f"dataset.noise={noise} must be >= 0")
    c, h, w = SHAPES[shape]
    patterns = class_patterns(num_classes, (c, h, w), seed)
    splits = [
        make_images(patterns, n, noise, seed, split) for split, n in enumerate((n_train, n_val, n_test))
    ]
    return assemble_splits(
        f"synthetic_{shape}",
        train=splits[0],
        val=splits[1],
        test=splits[2],
        class_names=[f"class{i}" for i in range(num_classes)],
        subset=subset,
        seed=seed,
        extra={"shape": shape},
    )


def class_patterns(num_classes: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """(K, C, H, W) in [0.15, 0.85]: per class, a random 4x4 colour layout smoothly upsampled."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    coarse = (torch.rand(num_classes, c, 4, 4, generator=g) > 0.5).float()  # bold: on or off
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return 0.15 + 0.7 * smooth.clamp(0, 1)


def make_images(
    patterns: torch.Tensor, n: int, noise: float, seed: int, split: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8 (n, C, H, W)) and labels (balanced, shuffled) of one split."""
    k, c, h, w = patterns.shape
    g = torch.Generator().manual_seed(seed * 1_000_003 + 101 + split)
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=g)]
    x = torch.empty(n, c, h, w, dtype=torch.uint8)
    shift = max(1, h // 8)
    for start in range(0, n, _CHUNK):
        yb = y[start : start + _CHUNK]
        m = len(yb)
        img = patterns[yb]  # (m, C, H, W)
        # each image: its class's pattern shifted (cyclically) by up to h/8 pixels, a
        # contrast factor, Gaussian noise
        dy = torch.randint(-shift, shift + 1, (m, 1), generator=g)
        dx = torch.randint(-shift, shift + 1, (m, 1), generator=g)
        rows = (torch.arange(h) - dy) % h  # (m, H)
        cols = (torch.arange(w) - dx) % w  # (m, W)
        img = img[
            torch.arange(m)[:, None, None, None],
            torch.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        contrast = 0.7 + 0.6 * torch.rand(m, 1, 1, 1, generator=g)
        img = 0.5 + (img - 0.5) * contrast
        img = img + noise * torch.randn(m, c, h, w, generator=g)
        x[start : start + m] = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return x, y
