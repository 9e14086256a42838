"""data/loaders.py: TensorLoader (shuffled batches, resumable mid-epoch, a rank's share of
each global batch) and the batch limits (limit_count, first_batches, LimitedLoader,
FixedBatches)."""

from __future__ import annotations

import pytest
import torch

from pdl_experiments.data import FixedBatches, LimitedLoader, TensorLoader, first_batches, limit_count


def test_overfit_batches_are_the_first_ones_in_order_unaugmented():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    gen = torch.Generator().manual_seed(0)
    shuffled = TensorLoader(x, y, 10, shuffle=True, generator=gen, transform=lambda b: b + 1000)
    fixed = FixedBatches(shuffled, 3)
    assert len(fixed) == 3 and fixed.generator is None
    for _ in range(2):  # every epoch the same
        assert [b[1].tolist() for b in fixed] == [list(range(i * 10, i * 10 + 10)) for i in range(3)]
    assert [b[1][0].item() for b in fixed.iter_from(1)] == [10, 20]
    assert fixed.batches[0][0].max().item() < 1000  # no transform


def test_limit_count_and_share():
    assert limit_count(None, 17) == 17
    assert limit_count(3, 17) == 3 and limit_count(30, 17) == 17
    assert limit_count(0.5, 17) == 8 and limit_count(0.01, 17) == 1


def test_limited_loader_keeps_resume_semantics():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    gen = torch.Generator().manual_seed(0)
    inner = TensorLoader(x, y, 10, shuffle=True, generator=gen)
    lim = LimitedLoader(inner, 4)
    assert len(lim) == 4 and lim.generator is gen
    state = gen.get_state()
    epoch = [b[1].tolist() for b in lim]
    gen.set_state(state)  # what the trainer does to resume mid-epoch
    assert [b[1].tolist() for b in lim.iter_from(2)] == epoch[2:]
    gen.set_state(state)
    assert epoch == [b[1].tolist() for b in inner][:4]  # the epoch's first batches


def test_first_batches_of_a_split():
    x, y = torch.zeros(25, 1), torch.arange(25)
    assert first_batches((x, y), None, 10)[1] is y
    assert first_batches((x, y), 2, 10)[1].tolist() == list(range(20))
    assert first_batches((x, y), 0.4, 10)[1].tolist() == list(range(10))  # 3 batches -> 1


@pytest.mark.parametrize("n", [10, 9])
def test_each_rank_takes_its_slice_of_the_same_global_batches(n):
    x, y = torch.arange(n).float().view(n, 1), torch.arange(n)

    def batches(rank, world):
        gen = torch.Generator().manual_seed(3)
        loader = TensorLoader(x, y, 4, shuffle=True, generator=gen, rank=rank, world_size=world)
        return [yb.tolist() for _, yb in loader]

    one = batches(0, 1)
    r0, r1 = batches(0, 2), batches(1, 2)
    assert len(r0) == len(r1)  # the ranks step together
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one[: len(r0)]
    assert len(r0) == (3 if n == 10 else 2)  # a last batch of 1 cannot feed two ranks: dropped
