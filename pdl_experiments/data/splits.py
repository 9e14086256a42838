"""What every dataset loader returns: `DataSplits` of tensors with a `DataInfo`, and the
helpers loaders share (a seeded stratified split, a subset, per-channel statistics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import PdlError


class DataError(PdlError, RuntimeError):
    """A dataset that cannot be loaded; its message says where we looked and what to do."""


@dataclass
class DataInfo:
    """What a model needs to size itself from the data."""

    name: str
    kind: str = "image"  # "image" | "sequence"
    in_shape: tuple[int, ...] = ()  # (C, H, W) for images, (L,) for sequences
    num_classes: int = 0  # classes for images, vocabulary size for sequences
    mean: tuple[float, ...] = ()  # per channel, of the training split (images)
    std: tuple[float, ...] = ()
    class_names: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # task-specific (e.g. special tokens)


@dataclass
class DataSplits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    info: DataInfo

    def to(self, device: torch.device | str) -> DataSplits:
        move = lambda pair: tuple(t.to(device) for t in pair)
        return DataSplits(move(self.train), move(self.val), move(self.test), self.info)

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)[1]) for k in ("train", "val", "test")}


def as_float(x: Any) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 pixels (the image sets' training split) divided by
    255, a streamed split (image_folder with in_memory=false) decoded; float ones as they are.

    Every place that feeds images to a model without a loader (a technique's probe batch, an
    attack, a sample grid) goes through it.
    """
    if not isinstance(x, torch.Tensor):
        x = x.load()  # a streamed split (data/image_folder.py's FolderImages): decode it
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of an image tensor (N, C, H, W); of uint8 pixels in [0, 1]
    units, a chunk at a time (no float copy of the whole split)."""
    if x.dtype != torch.uint8:
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return tuple(mean.tolist()), tuple(std.tolist())
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for chunk in torch.split(x, 4096):
        c = chunk.to(torch.float64).div_(255.0)
        total += c.sum(dim=(0, 2, 3))
        squares += c.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)  # unbiased, as Tensor.std
    std = var.clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def stratified_split(y: torch.Tensor, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Split indices so each class is spread over the parts in the given fractions.

    Returns len(fractions) + 1 index tensors: one per fraction, then the remainder.
    Seeded, so the same seed always gives the same split.
    """
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for i, f in enumerate(fractions):
            n = int(round(f * len(idx)))
            parts[i].append(idx[start : start + n])
            start += n
        parts[-1].append(idx[start:])
    out = []
    for p in parts:
        cat = torch.cat(p) if p else torch.empty(0, dtype=torch.long)
        out.append(cat[torch.randperm(len(cat), generator=g)])
    return out


def take_subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int):
    """Keep n samples, stratified by class (all of them when n is None or too large)."""
    if n is None or n >= len(y):
        return x, y
    if n < 1:
        raise DataError(f"dataset.subset={n} must be a positive number of training samples")
    keep, _ = stratified_split(y, (n / len(y),), seed + 1)
    return x[keep], y[keep]
