"""run/flow.py: run(cfg, run_dir) top to bottom: a small default run, the thread count given
back, the augmentation preview that changes nothing of the run."""

from __future__ import annotations

import json

import torch

from helpers import run_small


def test_run_gives_back_the_thread_count(tmp_path):
    """trainer.num_threads is process-wide in torch: the next sweep job must not inherit it."""
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    run_small(tmp_path, ["trainer.max_epochs=1", "bn.diagnostics=false", f"trainer.num_threads={want}"])
    assert torch.get_num_threads() == before


def test_default_run_small(small_run):
    metrics, run_dir = small_run(["trainer.max_epochs=2"])
    assert metrics["test/acc"] > 0.5
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/acc"] == metrics["test/acc"]
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()


def test_the_augmentation_preview_changes_nothing_of_the_run(tmp_path):
    from helpers import run_small

    common = ["augmentation=light", "trainer.max_epochs=2", "bn.diagnostics=false", "dataset.subset=300"]
    with_grid, _ = run_small(tmp_path, [*common, "augmentation.grid=true"], name="grid")
    without, _ = run_small(tmp_path, [*common, "augmentation.grid=false"], name="nogrid")
    keys = [k for k in with_grid if "acc" in k or "loss" in k]
    assert keys and {k: with_grid[k] for k in keys} == {k: without[k] for k in keys}


def test_on_divergence_chance_finishes_a_diverged_run_at_chance(tmp_path):
    import json

    from helpers import run_small

    common = [
        "bn.enabled=false",
        "bn.diagnostics=false",
        "trainer.on_divergence=chance",
        "trainer.max_epochs=2",
    ]
    metrics, run_dir = run_small(tmp_path, ["optimizer=sgd", "optimizer.lr=1e6", *common], "diverged")
    assert metrics["run/diverged"] == 1.0
    assert metrics["test/acc"] == metrics["val/acc"] == 0.1  # 1 / num_classes, set
    assert "test/loss" not in metrics  # nothing else is made up
    assert json.loads((run_dir / "metrics.json").read_text())["run/diverged"] == 1.0
    fine, _ = run_small(tmp_path, common, "fine")  # a run that does not diverge says so too
    assert fine["run/diverged"] == 0.0 and fine["test/acc"] > 0.5
