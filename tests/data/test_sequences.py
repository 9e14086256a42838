"""data/sequences.py: the copy, reverse and sort tasks."""

from __future__ import annotations

import pytest
import torch

from pdl_experiments.data import DataError
from pdl_experiments.data.sequences import PAD, load_copy, load_reverse, load_sort

SMALL = dict(length=8, vocab=6, n_train=300, n_val=50, n_test=50)


def test_sequence_tasks_are_seeded_distinct_and_correct():
    a, b = load_reverse(**SMALL, seed=3), load_reverse(**SMALL, seed=3)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train[0], load_reverse(**SMALL, seed=4).train[0])
    x, y = a.train
    assert x.dtype == torch.long and x.shape == (300, 8)
    assert torch.equal(y, x.flip(1))
    assert int(x.min()) >= 2 and int(x.max()) < 2 + 6  # symbols after PAD and BOS
    assert a.info.kind == "sequence" and a.info.in_shape == (8,) and a.info.num_classes == 8
    rows = [tuple(r) for split in (a.train, a.val, a.test) for r in split[0].tolist()]
    assert len(set(rows)) == len(rows)  # no test sequence was seen in training
    c = load_copy(**SMALL)
    assert torch.equal(c.train[0], c.train[1])
    s = load_sort(**SMALL)
    assert torch.equal(s.train[1], s.train[0].sort(1).values)


def test_variable_lengths_are_right_padded():
    d = load_reverse(**SMALL, min_length=3)
    x, y = d.train
    lengths = (x != PAD).sum(1)
    assert int(lengths.min()) == 3 and int(lengths.max()) == 8
    for row_x, row_y, n in zip(x[:20], y[:20], lengths[:20], strict=True):
        assert (row_x[n:] == PAD).all() and (row_x[:n] != PAD).all()
        assert torch.equal(row_y[:n], row_x[:n].flip(0)) and (row_y[n:] == PAD).all()
    s = load_sort(**SMALL, min_length=3).train
    n = int((s[0][0] != PAD).sum())
    assert torch.equal(s[1][0, :n], s[0][0, :n].sort().values) and (s[1][0, n:] == PAD).all()


def test_impossible_sizes_name_the_key():
    with pytest.raises(DataError, match="dataset"):
        load_reverse(length=3, vocab=2, n_train=100, n_val=1, n_test=1)
    with pytest.raises(DataError, match="dataset.length=0"):
        load_reverse(length=0)
