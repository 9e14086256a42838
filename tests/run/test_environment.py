"""run/environment.py: the same seed gives the same run."""

from __future__ import annotations

from helpers import run_small


def test_same_seed_gives_identical_metrics(tmp_path):
    a, _ = run_small(tmp_path, ["trainer.max_epochs=2", "bn.diagnostics=false"], "a")
    b, _ = run_small(tmp_path, ["trainer.max_epochs=2", "bn.diagnostics=false"], "b")
    assert a["test/acc"] == b["test/acc"] and a["val/loss"] == b["val/loss"]
