"""Batches without per-sample work: `TensorLoader` over in-memory tensors (uint8 images become
float per batch; its generator is saved for an exact mid-epoch resume and keys the batched
augmentation), and the batch limits of the debug options (`limit_batches`, `first_batches`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .augment import batch_generator, epoch_key
from .splits import as_float


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
