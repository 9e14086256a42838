"""technique=bn: the diagnostics, BN against no BN on the plain deep net, the bad values, the
ablation preset. The layer itself (the course's against nn.BatchNorm): models/test_norm.py."""

from __future__ import annotations

import json

import pytest
import torch

from pdl_experiments.config import ConfigError

SMALL = ["model=plain_deep", "model.depth=3", "trainer.max_epochs=2", "dataset.subset=320"]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    ea.Reload()
    return ea


def test_diagnostics_land_in_metrics_json_and_tensorboard(small_run):
    from pdl_experiments.loading import load_run

    metrics, run_dir = small_run([*SMALL, "bn.impl=course"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "bn/grad_ratio_first_last",
        "bn/grad_first_per_output",
        "bn/act_std_last",
        "bn/grad_norm_first",
        "bn/grad_norm_last",
    ):
        assert key in saved and saved[key] > 0
    assert saved["bn/grad_ratio_first_last"] == pytest.approx(
        saved["bn/grad_norm_first"] / saved["bn/grad_norm_last"]
    )

    ea = _events(run_dir)
    layers = ["00_features.0", "01_features.3", "02_features.6", "03_fc"]  # forward order
    scalars = set(ea.Tags()["scalars"])
    for tag in layers:
        assert f"weight_layers/grad_norm/{tag}" in scalars and f"weight_layers/act_std/{tag}" in scalars
        assert len(ea.Scalars(f"weight_layers/grad_norm/{tag}")) == 2  # one per epoch
    assert all(v.value > 0 for t in layers for v in ea.Scalars(f"weight_layers/grad_norm/{t}"))
    # one per epoch, plus the end value (best weights) that the HPARAMS tab records
    assert [e.step for e in ea.Scalars("bn/grad_ratio_first_last")][:2] == [5, 10]  # 320 / 64
    hists = set(ea.Tags()["histograms"])
    assert {f"weight_layers/pre_activation/{t}" for t in layers} <= hists
    assert "bn/gradient_flow" in ea.Tags()["images"]

    # The course layer's E and Var are plain buffers: weights_only checkpoints, load_run.
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert "model.features.1.running_var" in ckpt["task"]
    loaded = load_run(run_dir)
    x, y = loaded.data.test
    assert (loaded.model(x).argmax(1) == y).float().mean().item() == pytest.approx(metrics["test/acc"])


def test_diagnostics_do_not_change_training_and_can_be_turned_off(small_run):
    on, _ = small_run(SMALL, name="on")
    off, off_dir = small_run([*SMALL, "bn.diagnostics=false"], name="off")
    # The probe runs in train mode but restores BN's running stats and the RNG.
    assert off["test/acc"] == on["test/acc"] and off["val/loss"] == pytest.approx(on["val/loss"], rel=1e-6)
    assert not any(k.startswith("bn/") for k in off)
    ea = _events(off_dir)
    assert not any(t.startswith("bn/") for t in ea.Tags()["scalars"] + ea.Tags()["histograms"])


def test_plain_deep_gradient_vanishes_without_bn(small_run):
    """One short epoch of the real 10-layer net: without BN the first layer gets no gradient."""
    fast = ["model=plain_deep", "trainer.max_epochs=1", "dataset.subset=320", "bn.probe_size=128"]
    with_bn, _ = small_run([*fast, "bn.enabled=true"], name="bn")
    without, _ = small_run([*fast, "bn.enabled=false"], name="plain")
    assert without["bn/grad_ratio_first_last"] < 1e-3 * with_bn["bn/grad_ratio_first_last"]
    assert without["bn/act_std_last"] < 1e-3 * with_bn["bn/act_std_last"]
    assert without["bn/grad_first_per_output"] < 1e-3 * with_bn["bn/grad_first_per_output"]


def test_a_dead_net_reports_no_gradient_ratio_and_zero_gradient_per_output():
    """Every ReLU dead: the last layer's gradient is 0 too, so first/last is 0/0 (left out,
    not reported as 0); the first layer's gradient per unit of output error is a true 0."""
    from torch import nn

    from pdl_experiments.techniques.bn import measure, summarize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():  # no ReLU ever fires: nothing flows back past them
        net[0].bias.fill_(-100.0)
        net[2].bias.fill_(-100.0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    layers, output_grad = measure(net, x, y)
    assert output_grad > 0 and [s.grad_norm for s in layers] == [0.0, 0.0, 0.0]
    logs = summarize(layers, output_grad)
    assert "bn/grad_ratio_first_last" not in logs and logs["bn/grad_first_per_output"] == 0.0
    alive, alive_out = measure(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), x, y)
    logs = summarize(alive, alive_out)
    assert logs["bn/grad_first_per_output"] == pytest.approx(alive[0].grad_norm / alive_out)
    assert logs["bn/grad_ratio_first_last"] == pytest.approx(alive[0].grad_norm / alive[-1].grad_norm)


@pytest.mark.slow
def test_plain_deep_trains_with_bn_and_stalls_without(small_run):
    """The acceptance run itself (default settings, 30 epochs) over three seeds: ~3 min of CPU
    per seed. BN on vs off is judged per seed (the gap is ~90 points). The course's layer vs
    torch's: docs/bn.md measured it about 0.9 points lower on test (-0.89 +- 0.45, seeds 5-9;
    ten seeds of ten lower) with the same validation accuracy, cause not found; this checks
    that it stays a small deficit (under 2 points on the mean, and below torch's on the mean:
    the sign measured), not a broken layer."""
    diffs = []
    for seed in (0, 1, 2):
        with_bn, _ = small_run(["model=plain_deep", f"seed={seed}"], name=f"bn{seed}")
        without, _ = small_run(["model=plain_deep", "bn.enabled=false", f"seed={seed}"], name=f"plain{seed}")
        course, _ = small_run(["model=plain_deep", "bn.impl=course", f"seed={seed}"], name=f"course{seed}")
        assert with_bn["test/acc"] >= 0.95 and without["test/acc"] < 0.5
        assert course["test/acc"] >= 0.95
        assert without["bn/grad_ratio_first_last"] <= 0.01 * with_bn["bn/grad_ratio_first_last"]
        diffs.append(course["test/acc"] - with_bn["test/acc"])
    mean = sum(diffs) / len(diffs)
    assert -0.02 <= mean <= 0.0, diffs


@pytest.mark.parametrize(
    "override, key",
    [
        ("bn.momentum=1.5", "bn.momentum"),
        ("bn.eps=0", "bn.eps"),
        ("bn.probe_size=1", "bn.probe_size"),
        ("model.init=xavier", "model.init"),
        ("model.depth=0", "model.depth"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(small_run, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        small_run(["model=plain_deep", "trainer.max_epochs=1", override])
    assert "\n" not in str(err.value)


def test_ablation_preset_sweeps_bn_against_the_learning_rate():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=bn_ablation"], return_hydra_config=True)
    assert cfg.technique == "bn" and cfg.model._target_.endswith("PlainDeep")
    params = cfg.hydra.sweeper.params
    assert params["bn.enabled"] == "true,false"
    lrs = [float(v) for v in params["optimizer.lr"].split(",")]
    assert min(lrs) <= 0.003 and max(lrs) >= 1.0 and lrs == sorted(lrs)  # log-spaced, over 300x
    assert len(params["seed"].split(",")) >= 5
    # A standard init (no stall at the start), SGD with momentum, a diverged job counted.
    assert cfg.model.init == "kaiming" and cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.trainer.on_divergence == "chance"
