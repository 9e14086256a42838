"""The runner itself: composition, trainer, checkpoints, event files, resume, CLI errors."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from hydra.errors import ConfigCompositionException

from pdl_experiments.config import ConfigError
from pdl_experiments.techniques import QUICK, TECHNIQUES

from helpers import ENV, PY, REPO, compose, pdl_run, run_small

CONFIGS = REPO / "configs"


# ---------------------------------------------------------------- composition
def group_options():
    for group in (
        "model",
        "dataset",
        "augmentation",
        "optimizer",
        "scheduler",
        "trainer",
        "technique",
        "experiment",
    ):
        for f in sorted((CONFIGS / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group,option", list(group_options()))
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.technique in TECHNIQUES
    assert cfg.trainer.max_epochs >= 1


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


def test_technique_options_live_under_their_own_key():
    cfg = compose(["technique=prune", "prune.level=filter"])
    assert cfg.technique == "prune" and cfg.prune.level == "filter"


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.max_epochs=abc", ConfigError),  # the schema's type check (config.typed)
        ("trainer.nosuch=1", ConfigCompositionException),  # Hydra: no such key to override
        ("model=nosuch", ConfigCompositionException),  # Hydra: no such config group option
        ("trainer.device=tpu", ConfigError),  # the schema's enum check
    ],
)
def test_bad_overrides_fail_at_composition(override, error):
    with pytest.raises(error):
        compose([override])


# ---------------------------------------------------------------- augmentation
def _aug(**kw):
    from pdl_experiments.config import AugmentationConfig
    from pdl_experiments.data.augment import build_augmentation

    cfg = AugmentationConfig(**kw)
    return build_augmentation(cfg, (3, 16, 16))


@pytest.mark.parametrize(
    "op",
    [dict(crop_scale=0.5), dict(mirror=1.0), dict(rotation=30), dict(brightness=0.5), dict(saturation=0.9)],
)
def test_each_augmentation_changes_images_and_keeps_range(op):
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    aug = _aug(**op)
    y = aug(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)


def test_no_augmentation_is_none_and_saturation_on_grayscale_is_an_error():
    from pdl_experiments.config import AugmentationConfig
    from pdl_experiments.data.augment import AugmentationError, build_augmentation

    assert build_augmentation(AugmentationConfig(), (1, 8, 8)) is None
    with pytest.raises(AugmentationError, match="1-channel"):
        build_augmentation(AugmentationConfig(saturation=0.5), (1, 8, 8))


def test_mirror_flips_per_image():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(4, 3, 1, 1) / 16
    y = _aug(mirror=1.0)(x)
    assert torch.equal(y, x.flip(-1))


# ---------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    from helpers import run_small

    tmp = tmp_path_factory.mktemp("default")
    return run_small(tmp, ["trainer.max_epochs=4", "augmentation=light"])


def test_run_dir_contents(default_run):
    metrics, run_dir = default_run
    for key in ("val/acc", "test/acc", "params", "train/time_s"):
        assert key in metrics
    assert metrics["test/acc"] > 0.85
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    env = json.loads((run_dir / "env.json").read_text())
    assert "torch" in env["packages"]


def test_checkpoints_load_with_weights_only(default_run):
    _, run_dir = default_run
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert ckpt["technique"] == "bn" and "task" in ckpt
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


def test_load_run_gives_the_trained_model_back(default_run):
    from pdl_experiments import load_run
    from pdl_experiments.cli import eval_main  # noqa: F401  (pdl-eval uses the same path)
    from pdl_experiments.loading import evaluate_run

    metrics, run_dir = default_run
    loaded = load_run(run_dir)
    assert not loaded.model.training
    assert loaded.data.sizes()["test"] == 359
    assert evaluate_run(run_dir)["test/acc"] == pytest.approx(metrics["test/acc"])


def test_event_file_has_scalars_images_and_hparams_in_the_run_itself(default_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = default_run
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, "one event file, no stray sub-run"
    assert not [p for p in run_dir.iterdir() if p.is_dir() and list(p.glob("events.*"))]
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "val/acc", "lr", "train/epoch_time_s", "train/samples_per_s", "test/acc"):
        assert tag in scalars, tag
    val_steps = [e.step for e in acc.Scalars("val/acc")]
    assert len(val_steps) == 5 and val_steps == sorted(val_steps)  # 4 epochs + the final value
    assert "augmentation/augmented" in acc.Tags()["images"]
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins


def test_same_seed_gives_identical_metrics(tmp_path):
    from helpers import run_small

    a, _ = run_small(tmp_path, ["trainer.max_epochs=2", "bn.diagnostics=false"], "a")
    b, _ = run_small(tmp_path, ["trainer.max_epochs=2", "bn.diagnostics=false"], "b")
    assert a["test/acc"] == b["test/acc"] and a["val/loss"] == b["val/loss"]


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    from pdl_experiments.training import NonFiniteLossError

    from helpers import run_small

    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        run_small(tmp_path, ["optimizer=sgd", "optimizer.lr=1e6", "bn.enabled=false", "bn.diagnostics=false"])


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


# ---------------------------------------------------------------- the CLI
def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    for args in (["trainer.max_epochs=abc"], ["model=nosuch"], ["trainer.batch_size=0"]):
        p = pdl_run(args, tmp_path, timeout=120)
        assert p.returncode != 0, args
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("pdl-run: error:"), p.stderr
        assert args[0].split("=")[0] in lines[0]
        assert not (tmp_path / "outputs" / "runs").exists() or not list(
            (tmp_path / "outputs" / "runs").rglob("metrics.json")
        )


def test_cfg_job_imports_no_torch(tmp_path):
    code = (
        "import sys; sys.argv = ['pdl-run', '--cfg', 'job'];\n"
        "from pdl_experiments import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('NO_TORCH')"
    )
    p = subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=60)
    assert "NO_TORCH" in p.stdout, p.stderr
    assert "technique: bn" in p.stdout


def test_multirun_makes_job_dirs_with_hparams_and_a_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "sweep"
    p = pdl_run(
        [
            "-m",
            "optimizer.lr=0.01,0.1",
            "trainer.max_epochs=1",
            "bn.diagnostics=false",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1"]
    # Named by what varies between the jobs; the shared overrides are in the summary.
    assert [d.name for d in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=0.1"]
    for d in jobs:
        assert (d / "metrics.json").is_file()
        acc = EventAccumulator(str(d))
        acc.Reload()
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    for name in ("summary.csv", "summary.md"):
        assert (sweep / name).is_file()
    assert list(sweep.glob("*.png"))


def test_run_gives_back_the_thread_count(tmp_path):
    """trainer.num_threads is process-wide in torch: the next sweep job must not inherit it."""
    import torch

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    run_small(tmp_path, ["trainer.max_epochs=1", "bn.diagnostics=false", f"trainer.num_threads={want}"])
    assert torch.get_num_threads() == before
