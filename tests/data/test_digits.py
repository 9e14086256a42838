"""data/digits.py: scikit-learn's bundled digits, read without importing scikit-learn."""

from __future__ import annotations

import numpy as np
import torch

from pdl_experiments.data.digits import load_digits

from helpers import assert_same


def test_digits_split_is_complete_stratified_and_deterministic():
    s = load_digits(seed=3)
    assert sum(s.sizes().values()) == 1797
    for x, y in (s.train, s.val, s.test):
        assert x.shape[1:] == (1, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
        assert set(y.tolist()) == set(range(10))
    assert_same(s, load_digits(seed=3))
    assert not torch.equal(s.test[1], load_digits(seed=4).test[1])


def test_digits_are_read_as_scikit_learn_reads_them_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sk_digits

    from pdl_experiments.data.digits import _read_digits

    images, target = _read_digits()
    bunch = sk_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    probe = "import sys; from pdl_experiments.data.digits import load_digits; load_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
