"""run/outputs.py: what a run writes besides checkpoints (metrics.json, env.json) and the
headline metrics of the HPARAMS table."""

from __future__ import annotations

import json

import pytest

from pdl_experiments.techniques import TECHNIQUES


def test_run_dir_contents(default_run):
    metrics, run_dir = default_run
    for key in ("val/acc", "test/acc", "params", "train/time_s"):
        assert key in metrics
    assert metrics["test/acc"] > 0.85
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    env = json.loads((run_dir / "env.json").read_text())
    assert "torch" in env["packages"]


def test_headline_is_a_handful_led_by_test_acc():
    from pdl_experiments.run.outputs import headline

    everything = {k: 0.5 for k in ("test/acc", "val/acc", "test/loss", "val/loss", "run/wall_s")}
    for name in TECHNIQUES:
        own = TECHNIQUES[name].obj.headline
        keys = list(headline({**everything, **{k: 1.0 for k in own}}, own))
        assert keys[0] in ("test/acc", own[0]) and 3 <= len(keys) <= 8, (name, keys)
        assert "run/wall_s" not in keys
