"""techniques/__init__.py: every registered technique runs end to end with its QUICK settings
and reads back."""

from __future__ import annotations

import json

import pytest

from pdl_experiments.techniques import QUICK, TECHNIQUES

from helpers import run_small


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_every_technique_runs_a_tiny_epoch(tmp_path, technique):
    """The registry is the list: each entry runs end to end with its quick settings."""
    small_data = "dataset.n_train=400" if technique == "attention" else "dataset.subset=300"
    metrics, run_dir = run_small(
        tmp_path, [f"technique={technique}", small_data, "trainer.num_threads=1", *QUICK[technique]]
    )
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    assert (run_dir / "checkpoints" / "best.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    # Read back as a shared run directory would be: checked config, weights_only checkpoint.
    from pdl_experiments.loading import evaluate_run, load_run

    assert not load_run(run_dir).model.training
    assert evaluate_run(run_dir)
