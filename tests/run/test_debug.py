"""The debug presets (configs/debug/) and the options behind them: fast dev runs of every
technique, overfitting a few batches, batch limits, the profiler."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import matplotlib
import pytest
import torch

from pdl_experiments.config import ConfigError
from pdl_experiments.data import FixedBatches, LimitedLoader, TensorLoader, first_batches, limit_count
from pdl_experiments.run.debug import OVERFIT_TARGET, TRACE_FILE
from pdl_experiments.techniques import TECHNIQUES
from pdl_experiments.training.trainer import Trainer

from helpers import ENV, REPO, interrupt_and_resume, pdl_run, run_small, without_timings

FDR_TIMES: dict[str, float] = {}  # wall seconds per technique, printed at the end (not asserted)
# matplotlib's font cache stays where it is (it reads $XDG_CACHE_HOME once, on first use):
# not this project's file, and the tests point XDG_CACHE_HOME at an empty directory.
MPL_CACHE = matplotlib.get_cachedir()


@contextlib.contextmanager
def as_pdl_run(overrides: list[str], run_dir: Path):
    """The config `pdl-run <overrides>` runs, with Hydra's runtime config set meanwhile (the
    fdr preset puts the GAN judge's cache in ${hydra:runtime.output_dir})."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg  # typed() leaves the hydra section out
    finally:
        HydraConfig.instance().cfg = None


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


def _written_since(root: Path, stamp: float) -> list[Path]:
    """Files under root modified after `stamp` (find ROOT -newer STAMP -type f)."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            with contextlib.suppress(OSError):
                if p.stat().st_mtime > stamp:
                    out.append(p)
    return out


# ----------------------------------------------------------------------------- debug=fdr
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_fdr_runs_one_batch_of_every_phase_and_writes_only_its_run_dir(
    tmp_path, monkeypatch, fits, technique
):
    from pdl_experiments.run import run

    cache = tmp_path / "cache"  # where ~/.cache would be: the GAN judge's default home
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(tmp_path)  # a relative outputs/ would land here
    run_dir = tmp_path / "outputs" / "run"
    stamp = time.time() - 1e-3
    t0 = time.perf_counter()
    with as_pdl_run(["debug=fdr", f"technique={technique}", "trainer.progress=none"], run_dir) as cfg:
        metrics = run(cfg, run_dir)
    FDR_TIMES[technique] = time.perf_counter() - t0
    assert metrics and (run_dir / "metrics.json").is_file()
    assert fits, "no phase trained"
    for phase, batches, epochs, steps in fits:
        assert (batches, epochs, steps) == (1, 1, 1), f"phase {phase}: {batches} batches x {epochs} epochs"
    outside = [p for p in _written_since(tmp_path, stamp) if run_dir not in p.parents]
    assert not outside, f"written outside the run dir: {outside}"
    assert not cache.exists()
    if technique == "gan":  # the judge was trained and cached, inside the run dir
        assert list((run_dir / "judge_cache").glob("gan_judge-*.pt"))


def test_fdr_cli_gan_leaves_the_outputs_tree_and_cache_alone(tmp_path):
    """The real pdl-run: Hydra's files, the judge cache and the run's own files all in its dir."""
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "MPLCONFIGDIR": MPL_CACHE}
    stamp = time.time() - 1e-3
    t0 = time.perf_counter()
    p = pdl_run(
        ["debug=fdr", "technique=gan", "trainer.progress=none", "logger=[tensorboard,mlflow]"],
        cwd=tmp_path,
        env=env,
    )
    FDR_TIMES["gan (pdl-run)"] = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    (run_dir,) = [d.parent for d in tmp_path.glob("outputs/runs/gan/*/*/metrics.json")]
    outside = [f for f in _written_since(tmp_path, stamp) if run_dir not in f.parents]
    assert not outside, f"written outside the run dir: {outside}"
    assert list((run_dir / "judge_cache").glob("gan_judge-*.pt"))
    assert (run_dir / "mlflow.db").is_file()  # the MLflow store too, not outputs/mlflow.db


def test_fdr_times_are_reported():
    """Not a check: the wall time of each fdr run above, for the record (pytest -s)."""
    for name, t in FDR_TIMES.items():
        print(f"debug=fdr technique={name}: {t:.1f} s")


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


def test_overfit_batches_are_the_first_ones_in_order_unaugmented():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    gen = torch.Generator().manual_seed(0)
    shuffled = TensorLoader(x, y, 10, shuffle=True, generator=gen, transform=lambda b: b + 1000)
    fixed = FixedBatches(shuffled, 3)
    assert len(fixed) == 3 and fixed.generator is None
    for _ in range(2):  # every epoch the same
        assert [b[1].tolist() for b in fixed] == [list(range(i * 10, i * 10 + 10)) for i in range(3)]
    assert [b[1][0].item() for b in fixed.iter_from(1)] == [10, 20]
    assert fixed.batches[0][0].max().item() < 1000  # no transform


def test_overfit_reports_a_model_that_does_not_learn(tmp_path):
    metrics, _ = run_small(
        tmp_path, ["debug=overfit", "model=mlp", "bn.diagnostics=false", "trainer.max_epochs=1"]
    )
    assert metrics["debug/overfit_ok"] == 0.0
    assert metrics["debug/overfit_steps"] == 4  # never reached: all the phase's steps


# --------------------------------------------------------------------------- batch limits
def test_limit_count_and_share():
    assert limit_count(None, 17) == 17
    assert limit_count(3, 17) == 3 and limit_count(30, 17) == 17
    assert limit_count(0.5, 17) == 8 and limit_count(0.01, 17) == 1


@pytest.mark.parametrize("value", ["0", "1.5", "-1", "0.0"])
def test_limit_out_of_range_is_one_line(tmp_path, value):
    with pytest.raises(ConfigError, match="trainer.limit_train_batches"):
        run_small(tmp_path, [f"trainer.limit_train_batches={value}"])


def test_limited_loader_keeps_resume_semantics():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    gen = torch.Generator().manual_seed(0)
    inner = TensorLoader(x, y, 10, shuffle=True, generator=gen)
    lim = LimitedLoader(inner, 4)
    assert len(lim) == 4 and lim.generator is gen
    state = gen.get_state()
    epoch = [b[1].tolist() for b in lim]
    gen.set_state(state)  # what the trainer does to resume mid-epoch
    assert [b[1].tolist() for b in lim.iter_from(2)] == epoch[2:]
    gen.set_state(state)
    assert epoch == [b[1].tolist() for b in inner][:4]  # the epoch's first batches


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


def test_first_batches_of_a_split():
    x, y = torch.zeros(25, 1), torch.arange(25)
    assert first_batches((x, y), None, 10)[1] is y
    assert first_batches((x, y), 2, 10)[1].tolist() == list(range(20))
    assert first_batches((x, y), 0.4, 10)[1].tolist() == list(range(10))  # 3 batches -> 1


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
