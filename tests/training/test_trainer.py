"""training/trainer.py: divergence stops a run and is named, the checkpoints it keeps, an
epoch hook that ends a run."""

from __future__ import annotations

import pytest

from helpers import as_pdl_run, compose, run_small


def _run(tmp_path, overrides):
    from pdl_experiments.run import run

    with as_pdl_run(overrides) as cfg:
        return run(cfg, tmp_path / "run")


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    from pdl_experiments.training import NonFiniteLossError

    from helpers import run_small

    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        run_small(tmp_path, ["optimizer=sgd", "optimizer.lr=1e6", "bn.enabled=false", "bn.diagnostics=false"])


def test_divergence_is_named_whatever_meets_it_first(tmp_path):
    with pytest.raises(Exception, match="non-finite") as e:
        _run(
            tmp_path,
            [
                "optimizer=sgd",
                "optimizer.lr=1e6",
                "optimizer.momentum=0.99",
                "trainer.max_epochs=2",
                "trainer.progress=none",
                "dataset.subset=300",
            ],
        )
    assert "histogram" not in str(e.value)


def test_checkpoints_keep_last_and_best_only_by_default(tmp_path):
    _, run_dir = run_small(tmp_path, ["trainer.max_epochs=3", "bn.diagnostics=false"], "default")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    _, run_dir = run_small(
        tmp_path, ["trainer.max_epochs=4", "trainer.keep=2", "bn.diagnostics=false"], "keep2"
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "last.pt",
        "train_epoch0003.pt",
        "train_epoch0004.pt",
    ]


def test_an_epoch_hook_stops_the_run_with_last_pt(tmp_path) -> None:
    """A hook handed to run() (an Optuna trial's, sweeps/hpo.py, which cli/job.py hands over)
    ends the run with StopRun; last.pt is written first."""
    from pdl_experiments.run import run
    from pdl_experiments.training import StopRun

    seen = []

    def hook(epoch, logs):
        seen.append((epoch, "val/acc" in logs))
        if epoch == 2:
            raise StopRun("enough", status="pruned")

    cfg = compose(["trainer.progress=none", "trainer.max_epochs=4", "bn.diagnostics=false"])
    with pytest.raises(StopRun) as e:
        run(cfg, tmp_path / "run", epoch_hooks=[hook])
    assert (e.value.status, e.value.phase, e.value.epoch) == ("pruned", "train", 2)
    assert seen == [(1, True), (2, True)]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
