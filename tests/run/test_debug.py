"""run/debug.py: the debug presets (configs/debug/) and the options behind them: fast dev runs
of every technique, overfitting a few batches, batch limits on a run, the profiler. The
loaders that cut the batches: data/test_loaders.py; the fdr preset through pdl-run:
e2e/test_cli_runs.py."""

from __future__ import annotations

import json
import logging
import time

import pytest

from pdl_experiments.run.debug import OVERFIT_TARGET, TRACE_FILE
from pdl_experiments.techniques import TECHNIQUES
from pdl_experiments.training.trainer import Trainer

from helpers import REPO, as_pdl_run, interrupt_and_resume, run_small, without_timings, written_since


@pytest.fixture
def fits(monkeypatch):
    """Each Trainer.fit of the run: (phase, train batches per epoch, epochs, steps taken)."""
    seen: list[tuple[str, int, int, int]] = []
    fit = Trainer.fit

    def recording(self, task, train_loader, *args, **kw):
        before = self.global_step
        result = fit(self, task, train_loader, *args, **kw)
        seen.append((result.phase, len(train_loader), result.epochs, self.global_step - before))
        return result

    monkeypatch.setattr(Trainer, "fit", recording)
    return seen


# ----------------------------------------------------------------------------- debug=fdr
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_fdr_runs_one_batch_of_every_phase_and_writes_only_its_run_dir(
    tmp_path, monkeypatch, fits, technique
):
    from pdl_experiments.run import run

    cache = tmp_path / "cache"  # where ~/.cache would be: the GAN judge's default home
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    # matplotlib's own font cache (built on its first figure in a process) would follow
    # XDG_CACHE_HOME too: it is the user's environment, not something the run writes.
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path.parent / f"{tmp_path.name}-mplconfig"))
    monkeypatch.chdir(tmp_path)  # a relative outputs/ would land here
    run_dir = tmp_path / "outputs" / "run"
    stamp = time.time() - 1e-3
    with as_pdl_run(["debug=fdr", f"technique={technique}", "trainer.progress=none"], run_dir) as cfg:
        metrics = run(cfg, run_dir)
    assert metrics and (run_dir / "metrics.json").is_file()
    assert fits, "no phase trained"
    for phase, batches, epochs, steps in fits:
        assert (batches, epochs, steps) == (1, 1, 1), f"phase {phase}: {batches} batches x {epochs} epochs"
    outside = [p for p in written_since(tmp_path, stamp) if run_dir not in p.parents]
    assert not outside, f"written outside the run dir: {outside}"
    assert not cache.exists()
    if technique == "gan":  # the judge was trained and cached, inside the run dir
        assert list((run_dir / "judge_cache").glob("gan_judge-*.pt"))


def test_fdr_times_are_reported(tmp_path, monkeypatch):
    """A debug=fdr run reports its own wall time (run/wall_s, in metrics.json and the summary
    table): within the time measured around it, and no less than its training time. Printed
    for the record (pytest -s)."""
    from pdl_experiments.run import run

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "run"
    t0 = time.perf_counter()
    with as_pdl_run(["debug=fdr", "technique=bn", "trainer.progress=none"], run_dir) as cfg:
        metrics = run(cfg, run_dir)
    took = time.perf_counter() - t0
    print(f"debug=fdr technique=bn: {took:.1f} s (run/wall_s {metrics['run/wall_s']:.1f} s)")
    assert 0 < metrics["train/time_s"] <= metrics["run/wall_s"] <= took
    assert json.loads((run_dir / "metrics.json").read_text())["run/wall_s"] == metrics["run/wall_s"]


# ------------------------------------------------------------------------- debug=overfit
def test_overfit_mlp_drives_the_training_loss_near_zero_and_says_so(tmp_path, fits, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="pdl_experiments"):
        metrics, run_dir = run_small(tmp_path, ["debug=overfit", "model=mlp", "bn.diagnostics=false"])
    ((phase, batches, epochs, steps),) = fits
    assert batches == 4 and steps == 200
    assert metrics["debug/overfit_final_loss"] < OVERFIT_TARGET
    assert metrics["debug/overfit_ok"] == 1.0
    assert 0 < metrics["debug/overfit_steps"] <= 200
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["debug/overfit_ok"] == 1.0
    assert "the model can learn" in caplog.text
    assert "debug/overfit_ok" in capsys.readouterr().out  # the end-of-run summary table


def test_overfit_reports_a_model_that_does_not_learn(tmp_path):
    metrics, _ = run_small(
        tmp_path, ["debug=overfit", "model=mlp", "bn.diagnostics=false", "trainer.max_epochs=1"]
    )
    assert metrics["debug/overfit_ok"] == 0.0
    assert metrics["debug/overfit_steps"] == 4  # never reached: all the phase's steps


# --------------------------------------------------------------------------- batch limits


def test_limits_cut_train_batches_per_epoch_and_eval_splits(tmp_path, fits, caplog):
    overrides = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=0.5",
        "trainer.eval_batch_size=100",  # digits: val 269 -> 100, test 359 -> 4 batches -> 2
    ]
    with caplog.at_level(logging.INFO, logger="pdl_experiments"):
        run_small(tmp_path, overrides)
    assert fits == [("train", 3, 2, 6)]
    assert "val=100 test=200" in caplog.text

    fits.clear()
    run_small(tmp_path, ["debug=limit", "bn.diagnostics=false"], name="preset")
    ((_, batches, epochs, _),) = fits
    assert (batches, epochs) == (int(0.2 * 19), 3)  # 1169 training images / 64 = 19 batches


def test_a_limited_run_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    overrides = [
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.eval_batch_size=128",
        "trainer.num_threads=1",
    ]
    # in step 6 (counted after it): epoch 2, batch 2 of 4
    clean, last, resumed = interrupt_and_resume(
        tmp_path, monkeypatch, overrides, lambda t: t.global_step == 5
    )
    assert (last["loop"]["epoch"], last["loop"]["batch"]) == (1, 2)
    assert without_timings(resumed) == pytest.approx(without_timings(clean), rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------------- debug=profile
def test_profile_writes_a_trace_and_the_top_operators(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with caplog.at_level(logging.INFO, logger="pdl_experiments"):
        metrics, run_dir = run_small(tmp_path, ["debug=profile", "bn.diagnostics=false"])
    trace = json.loads((run_dir / TRACE_FILE).read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert len(events) > 0
    assert metrics["debug/profile_events"] == len(events)
    assert "top operators by self CPU time" in caplog.text and "Self CPU" in caplog.text
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    (tag,) = [t for t in acc.Tags()["tensors"] if t.startswith("debug/profile")]  # .../text_summary
    (text,) = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)]
    assert "top operators by self CPU time" in text and "Self CPU" in text


def test_profile_of_a_run_too_short_warns(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="pdl_experiments"):
        metrics, run_dir = run_small(
            tmp_path, ["debug=profile", "bn.diagnostics=false", "trainer.limit_train_batches=2"]
        )
    assert not (run_dir / TRACE_FILE).exists() and "debug/profile_events" not in metrics
    assert "too few to record" in caplog.text


def test_configs_have_the_debug_group():
    assert sorted(p.stem for p in (REPO / "configs" / "debug").glob("*.yaml")) == [
        "fdr",
        "limit",
        "overfit",
        "profile",
    ]
