"""config/ranges.py: every ranged option refuses what is out of its range, naming the key,
before any work starts."""

from __future__ import annotations

import pytest

from pdl_experiments.config import ConfigError, typed
from pdl_experiments.config.ranges import _RANGES, validate

from helpers import as_pdl_run, bad_values, run_small

RANGE_CASES = [
    (key, v)
    for key, ok, _ in _RANGES
    for v in bad_values(ok)
    if not key.startswith(("optimizer.betas", "optimizer.eps"))
]


@pytest.mark.parametrize("key,value", RANGE_CASES, ids=[f"{k}={v}" for k, v in RANGE_CASES])
def test_every_ranged_option_refuses_out_of_range_values(key, value):
    group_for = {"optimizer.momentum": ["optimizer=sgd"], "optimizer.weight_decay": []}
    overrides = [*group_for.get(key, []), f"{key}={value}".replace(" ", "")]
    with as_pdl_run(overrides) as cfg:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(typed(cfg))


@pytest.mark.parametrize("value", ["0", "1.5", "-1", "0.0"])
def test_limit_out_of_range_is_one_line(tmp_path, value):
    with pytest.raises(ConfigError, match="trainer.limit_train_batches"):
        run_small(tmp_path, [f"trainer.limit_train_batches={value}"])


def test_devices_range(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.devices=0 is out of range: expected an integer >= 1"):
        run_small(tmp_path, ["trainer.devices=0"])
