"""data/synthetic.py: dataset=synthetic gives learnable images of the shapes users scale to."""

from __future__ import annotations

import pytest
import torch

from helpers import compose, run_small


@pytest.mark.parametrize(
    "shape,in_shape",
    [("digits", (1, 8, 8)), ("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32)), ("imagenet64", (3, 64, 64))],
)
def test_synthetic_shapes_are_uint8_deterministic_and_split_independently(shape, in_shape):
    from pdl_experiments.data.synthetic import load_synthetic

    a = load_synthetic(shape, n_train=60, n_val=20, n_test=20, seed=3)
    assert a.info.in_shape == in_shape and a.info.num_classes == 10
    assert a.train[0].shape == (60, *in_shape) and a.train[0].dtype == torch.uint8
    assert a.val[0].dtype == torch.float32 and 0 <= a.val[0].min() and a.val[0].max() <= 1
    assert torch.bincount(a.train[1]).tolist() == [6] * 10  # balanced classes
    b = load_synthetic(shape, n_train=120, n_val=20, n_test=20, seed=3)
    assert torch.equal(a.val[0], b.val[0]) and torch.equal(a.test[0], b.test[0])  # n_train: train only
    assert torch.equal(a.train[0], load_synthetic(shape, n_train=60, n_val=20, n_test=20, seed=3).train[0])
    assert not torch.equal(
        a.train[0], load_synthetic(shape, n_train=60, n_val=20, n_test=20, seed=4).train[0]
    )


def test_synthetic_data_is_learnable_through_the_runner(tmp_path):
    metrics, _ = run_small(
        tmp_path,
        [
            "dataset=synthetic",
            "dataset.shape=digits",
            "dataset.n_train=1000",
            "dataset.n_val=100",
            "dataset.n_test=200",
            "trainer.max_epochs=3",
            "trainer.batch_size=32",
            "trainer.num_threads=1",
            "bn.diagnostics=false",
            "augmentation=light",
        ],
    )
    assert metrics["test/acc"] > 0.7


def test_synthetic_options_are_checked_before_any_work():
    from pdl_experiments.config import ConfigError
    from pdl_experiments.config.ranges import validate
    from pdl_experiments.data import DataError
    from pdl_experiments.data.synthetic import load_synthetic

    with pytest.raises(ConfigError, match=r"dataset\.noise"):
        validate(compose(["dataset=synthetic", "dataset.noise=-1"]))
    with pytest.raises(DataError, match="cifar10"):
        load_synthetic("cifar11")
