"""Datasets as in-memory tensors, split into train/val/test, batched without per-sample work.

Every loader (`digits.load_digits`, `vision.load_vision`, ...) returns a `DataSplits`; the
config's `dataset._target_` names the loader, so a user's own loader plugs in the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .augment import batch_generator, epoch_key


class DataError(RuntimeError):
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


class TensorLoader:
    """Batches from tensors already in memory (and on the device): no workers, no collate
    (a streamed image folder's split, `image_folder.FolderImages`, decodes in workers of its
    own). uint8 images come out as float in [0, 1]; `transform(batch, generator)` augments.

    Shuffling uses its own generator so the trainer can save and restore the exact order
    of an epoch (resume mid-epoch), independent of any other random draw.

    Under DDP (`world_size` > 1) every rank draws the same order and takes the `rank`-th
    slice of each global batch of `batch_size`; a last batch too small to give every rank a
    sample is dropped, so all ranks step together.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        # (batch, its generator) -> augmented batch: data/augment.py's BatchAugment
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.transform = transform
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        full, tail = divmod(len(self.y), self.batch_size)
        return full + (tail >= self.world_size)  # one process: every batch, the last one partial

    def _share(self, b: int) -> tuple[int, int]:
        """This rank's [start, end) in the epoch's order of global batch b (torch.tensor_split's cut)."""
        start = b * self.batch_size
        size = min(self.batch_size, len(self.y) - start)
        if self.world_size == 1:
            return start, start + size
        each, extra = divmod(size, self.world_size)
        lo = start + self.rank * each + min(self.rank, extra)
        return lo, lo + each + (self.rank < extra)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the epoch's batches, skipping the first start_batch (for resume)."""
        order = None
        if self.shuffle:
            order = torch.randperm(len(self.y), generator=self.generator).to(self.x.device)
        # Augmented: one more draw of the generator, the epoch's key; a batch's random
        # parameters are a function of (key, batch, rank), so a resume replays them exactly.
        key = epoch_key(self.generator) if self.transform is not None else 0
        batches = range(start_batch, len(self))
        rows = [slice(*self._share(b)) if order is None else order[slice(*self._share(b))] for b in batches]
        # uint8 images become float in [0, 1] here, per batch; a streamed image folder
        # (data/image_folder.py) decodes its batches ahead, in DataLoader workers.
        stream = getattr(self.x, "batches", None)
        xs = stream(rows) if stream is not None else (self.x[r] for r in rows)
        for b, r, xb in zip(batches, rows, xs, strict=True):
            xb = as_float(xb)
            if self.transform is not None:
                xb = self.transform(xb, batch_generator(key, b, self.rank))
            yield xb, self.y[r]


# -- batch limits (trainer.limit_*_batches, trainer.overfit_batches; configs/debug/) ----------
def limit_count(limit: float | None, n_batches: int) -> int:
    """How many of `n_batches` a `trainer.limit_*_batches` value keeps: a whole number >= 1 is
    a count, a value in (0, 1) a share (at least one batch), None all of them."""
    if limit is None:
        return n_batches
    if limit < 1:
        return min(n_batches, max(1, int(limit * n_batches)))
    return min(n_batches, int(limit))


def first_batches(
    split: tuple[torch.Tensor, torch.Tensor], limit: float | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of a split's first `limit` batches of `batch_size` (all: the split itself)."""
    x, y = split
    keep = limit_count(limit, -(-len(y) // batch_size)) * batch_size
    return (x[:keep], y[:keep]) if keep < len(y) else split


class LimitedLoader:
    """The first `n` batches of each epoch of another loader (trainer.limit_train_batches).

    It keeps what the trainer relies on for an exact mid-epoch resume: `len()`,
    `iter_from(start)` and `generator`, the wrapped loader's (its state at the start of an
    epoch fixes the epoch's order, and the limit keeps that order's first batches).
    """

    def __init__(self, loader: Any, n: int):
        self.loader = loader
        self.n = min(n, len(loader))
        self.generator = getattr(loader, "generator", None)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[Any]:
        return itertools.islice(self.loader.iter_from(start_batch), max(0, self.n - start_batch))


class FixedBatches:
    """The same first `n` batches every epoch (trainer.overfit_batches): for a TensorLoader the
    split's first n * batch_size samples in order, un-augmented; for another loader (NAS's
    paired halves) the first n batches of its first epoch. They are drawn once, before the
    trainer touches any generator, so a resumed run trains on the same ones."""

    generator = None  # nothing to save or restore: every epoch is the same

    def __init__(self, loader: Any, n: int):
        if isinstance(loader, TensorLoader):
            bs = loader.batch_size
            loader = TensorLoader(loader.x[: n * bs], loader.y[: n * bs], bs)
        self.batches = list(itertools.islice(loader.iter_from(0), n))

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[Any]:
        return iter(self.batches[start_batch:])


def limit_batches(loader: Any, limit: float | None = None, overfit: int = 0) -> Any:
    """`loader` as trainer.overfit_batches (when > 0) or trainer.limit_train_batches cut it."""
    if overfit > 0:
        return FixedBatches(loader, overfit)
    n = limit_count(limit, len(loader))
    return loader if n >= len(loader) else LimitedLoader(loader, n)
