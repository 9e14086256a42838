"""parallel/launch.py: what is refused before any process starts (with config/checks.py's
one-process techniques), the sweep job -> GPU assignment."""

from __future__ import annotations

import pytest

from pdl_experiments.config import ConfigError
from pdl_experiments.parallel.launch import assign_gpus

from helpers import run_small


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["technique=gan"], "trainer.devices=2: technique=gan steps its generator"),
        (["technique=nas"], "trainer.devices=2: technique=nas steps the architecture"),
        (["trainer.sync_bn=true", "trainer.device=cpu"], "trainer.sync_bn=true needs CUDA"),
        (["trainer.batch_size=1"], "trainer.batch_size=1 is the global batch"),
    ],
    ids=["gan", "nas", "sync_bn_cpu", "batch"],
)
def test_refused_before_any_process_starts(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_small(tmp_path, ["trainer.devices=2", *overrides])


@pytest.mark.parametrize(
    "visible,expected",
    [(1, [[0], [0], [0], [0], [0]]), (2, [[0], [1], [0], [1], [0]]), (4, [[0], [1], [2], [3], [0]])],
)
def test_sweep_jobs_get_gpus_round_robin(visible, expected):
    assert [assign_gpus(job, visible) for job in range(5)] == expected


def test_gpu_blocks_for_multi_gpu_jobs():
    assert [assign_gpus(job, 4, devices=2) for job in range(3)] == [[0, 1], [2, 3], [0, 1]]
    assert assign_gpus(3, 0) == []
    with pytest.raises(ValueError):
        assign_gpus(0, 2, devices=4)
