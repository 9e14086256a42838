"""Toy sequence-to-sequence tasks generated from the seed: copy, reverse, sort.

Each example is a string of `length` random symbols; the target is the same string
(copy), the string backwards (reverse) or its symbols in ascending order (sort). Nothing
is read from disk: the same seed always gives the same sequences, and no sequence occurs
twice across train/val/test, so test accuracy is never memorisation.

Token ids: 0 = PAD, 1 = BOS (the decoder's first input), 2.. = the `vocab` symbols, so a
model's output layer has `vocab + 2` classes (DataInfo.num_classes). With `min_length`
set, lengths are drawn uniformly from [min_length, length] and both source and target
are right-padded with PAD; the output always has as many real tokens as the input.

    x: (N, L) long   the source
    y: (N, L) long   the target, PAD where the source is PAD
"""

from __future__ import annotations

from functools import partial

import torch

from ..registry import DATASETS
from .splits import DataError, DataInfo, DataSplits

PAD, BOS, FIRST_SYMBOL = 0, 1, 2
TASKS = ("copy", "reverse", "sort")


def make_sequences(
    task: str,
    length: int = 20,
    vocab: int = 10,
    n_train: int = 5000,
    n_val: int = 500,
    n_test: int = 1000,
    min_length: int | None = None,
    seed: int = 0,
) -> DataSplits:
    _check(task, length, vocab, n_train, n_val, n_test, min_length)
    g = torch.Generator().manual_seed(seed)
    x = _distinct_sources(n_train + n_val + n_test, length, vocab, min_length, g)  # (N, L)
    y = target_of(task, x)
    a, b = n_train, n_train + n_val
    info = DataInfo(
        name=task,
        kind="sequence",
        in_shape=(length,),
        num_classes=vocab + FIRST_SYMBOL,
        class_names=["<pad>", "<bos>"] + [str(i) for i in range(vocab)],
        extra={
            "task": task,
            "pad": PAD,
            "bos": BOS,
            "first_symbol": FIRST_SYMBOL,
            "vocab": vocab,
            "min_length": min_length or length,
        },
    )
    return DataSplits((x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:]), info)


# The configs' loaders: make_sequences with the task fixed (their signatures list the options).
load_copy = partial(make_sequences, "copy")
load_reverse = partial(make_sequences, "reverse")
load_sort = partial(make_sequences, "sort")
for _name, _loader in (("copy", load_copy), ("reverse", load_reverse), ("sort", load_sort)):
    DATASETS.add(_name, _loader, kind="sequence", target=f"{__name__}.load_{_name}")


def target_of(task: str, x: torch.Tensor) -> torch.Tensor:
    """The target of each source row (PAD stays PAD, at the end)."""
    real = x != PAD  # (N, L)
    if task == "copy":
        return x.clone()
    if task == "reverse":
        lengths = real.sum(1, keepdim=True)  # (N, 1)
        pos = torch.arange(x.shape[1]).unsqueeze(0)  # (1, L)
        src = (lengths - 1 - pos).clamp_min(0)  # position t reads input len-1-t
        return torch.where(real, x.gather(1, src), PAD)
    if task == "sort":
        # PAD is the smallest id; lift it above every symbol so padding stays at the end.
        big = torch.iinfo(x.dtype).max
        s = torch.where(real, x, big).sort(dim=1).values
        return torch.where(s == big, PAD, s)
    raise DataError(f"unknown sequence task {task!r}: expected one of {', '.join(TASKS)}")


def source_positions(task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which input positions each output token comes from: (N, T, S) bool.

    copy: t -> t; reverse: t -> len-1-t; sort: every input position holding the same
    symbol (a sorted token has no single origin when the symbol repeats). The attention
    heatmap of a model that learned the task puts its weight on these cells.
    """
    n, length = x.shape
    pos = torch.arange(length, device=x.device)
    real_out = (y != PAD).unsqueeze(2)  # (N, T, 1)
    if task == "copy":
        hit = pos.view(1, -1, 1) == pos.view(1, 1, -1)  # (1, T, S)
        return hit.expand(n, -1, -1) & real_out
    if task == "reverse":
        lengths = (x != PAD).sum(1).view(-1, 1, 1)  # (N, 1, 1)
        return (pos.view(1, -1, 1) + pos.view(1, 1, -1) == lengths - 1) & real_out
    if task == "sort":
        return (y.unsqueeze(2) == x.unsqueeze(1)) & real_out
    raise DataError(f"unknown sequence task {task!r}: expected one of {', '.join(TASKS)}")


def _distinct_sources(
    n: int, length: int, vocab: int, min_length: int | None, g: torch.Generator
) -> torch.Tensor:
    """n distinct random sources, in the order drawn (so splits share no sequence)."""
    rows: list[torch.Tensor] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(50):
        batch = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + vocab, (n, length), generator=g)
        if min_length is not None and min_length < length:
            lengths = torch.randint(min_length, length + 1, (n, 1), generator=g)
            batch = torch.where(torch.arange(length).unsqueeze(0) < lengths, batch, PAD)
        for row in batch:
            key = tuple(row.tolist())
            if key not in seen:
                seen.add(key)
                rows.append(row)
                if len(rows) == n:
                    return torch.stack(rows)
    raise DataError(
        f"could not draw {n} distinct sequences of length <= {length} over "
        f"{vocab} symbols; raise dataset.length or dataset.vocab, or lower "
        "dataset.n_train/n_val/n_test"
    )


def _check(task, length, vocab, n_train, n_val, n_test, min_length) -> None:
    if task not in TASKS:
        raise DataError(f"unknown sequence task {task!r}: expected one of {', '.join(TASKS)}")
    for key, value in (
        ("length", length),
        ("vocab", vocab),
        ("n_train", n_train),
        ("n_val", n_val),
        ("n_test", n_test),
    ):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"dataset.{key}={value}: expected an integer >= 1")
    if min_length is not None and not (isinstance(min_length, int) and 1 <= min_length <= length):
        raise DataError(
            f"dataset.min_length={min_length}: expected null or an integer in [1, dataset.length={length}]"
        )
