"""loading/runs.py: load_run and evaluate_run give a finished run's model and metrics back."""

from __future__ import annotations

import pytest


def test_load_run_gives_the_trained_model_back(default_run):
    from pdl_experiments import load_run
    from pdl_experiments.cli import eval_main  # noqa: F401  (pdl-eval uses the same path)
    from pdl_experiments.loading import evaluate_run

    metrics, run_dir = default_run
    loaded = load_run(run_dir)
    assert not loaded.model.training
    assert loaded.data.sizes()["test"] == 359
    assert evaluate_run(run_dir)["test/acc"] == pytest.approx(metrics["test/acc"])
