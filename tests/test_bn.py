"""Batch norm: the course's layer against nn.BatchNorm, and the technique's diagnostics."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pdl_experiments.config import ConfigError
from pdl_experiments.models.norm import BatchNormSpec, CourseBatchNorm, is_norm

C = 4


def _pair(dims: int, momentum: float = 0.1, eps: float = 1e-5):
    """An nn.BatchNorm and a CourseBatchNorm with the same non-trivial gamma and beta."""
    ref = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(C, eps=eps, momentum=momentum)
    course = CourseBatchNorm(C, eps=eps, momentum=momentum)
    gen = torch.Generator().manual_seed(0)
    gamma, beta = torch.rand(C, generator=gen) + 0.5, torch.randn(C, generator=gen)
    with torch.no_grad():
        for m in (ref, course):
            m.weight.copy_(gamma)
            m.bias.copy_(beta)
    return ref, course


def _batches(dims: int, k: int, n: int = 8):
    """k batches, (n, C) or (n, C, 5, 3), off-centre and scaled per channel like real data."""
    gen = torch.Generator().manual_seed(1)
    shape = (n, C) if dims == 1 else (n, C, 5, 3)
    view = (1, C) if dims == 1 else (1, C, 1, 1)
    scale, shift = torch.arange(1.0, C + 1).view(view), torch.arange(C, dtype=torch.float).view(view)
    return [torch.randn(shape, generator=gen) * scale + shift for _ in range(k)]


def _values_per_channel(x: torch.Tensor) -> int:
    return x.numel() // x.shape[1]  # N for (N, C); N * H * W for (N, C, H, W)


@pytest.mark.parametrize("dims", [1, 2])
def test_course_layer_matches_torch_except_running_var(dims):
    ref, course = _pair(dims)
    xs = _batches(dims, k=3)
    for x in xs:  # the same training updates in both layers
        torch.testing.assert_close(course(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(course.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)

    # torch feeds the unbiased batch variance into running_var, the course the biased one:
    # every batch's contribution differs by n/(n-1), while the initial 1 decays alike (0.9^k).
    n, k = _values_per_channel(xs[0]), len(xs)
    decayed_init = 0.9**k
    torch.testing.assert_close(
        ref.running_var - decayed_init, (course.running_var - decayed_init) * n / (n - 1)
    )
    assert not torch.allclose(ref.running_var, course.running_var, rtol=1e-6, atol=0)

    ref.eval(), course.eval()
    x = _batches(dims, k=1, n=5)[0]
    if dims == 1:  # n = 8: an 8/7 factor is large enough to see in the outputs
        assert not torch.allclose(course(x), ref(x), atol=1e-3)
    else:  # n = 8 * 5 * 3 = 120: within a percent
        torch.testing.assert_close(course(x), ref(x), rtol=1e-2, atol=1e-2)
    # ... and it is the only difference: with torch's running_var, eval outputs agree.
    course.load_state_dict(ref.state_dict(), strict=False)
    torch.testing.assert_close(course(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2])
def test_with_momentum_one_running_var_differs_by_exactly_n_over_n_minus_1(dims):
    ref, course = _pair(dims, momentum=1.0)  # running stats = the last batch's
    x = _batches(dims, k=1)[0]
    ref(x), course(x)
    n = _values_per_channel(x)
    dims_ = [0] + list(range(2, x.dim()))
    torch.testing.assert_close(course.running_var, x.var(dim=dims_, unbiased=False))
    torch.testing.assert_close(ref.running_var, course.running_var * n / (n - 1))


def test_running_stats_decay_is_point_nine_old_plus_point_one_batch():
    bn = CourseBatchNorm(1)  # momentum 0.1 by default
    assert (bn.running_mean.item(), bn.running_var.item()) == (0.0, 1.0)  # E = 0, Var = 1
    bn(torch.tensor([[0.0], [4.0]]))  # mu = 2, biased var = 4
    assert bn.running_mean.item() == pytest.approx(0.9 * 0 + 0.1 * 2)  # 0.2
    assert bn.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 4)  # 1.3
    bn(torch.tensor([[1.0], [1.0]]))  # mu = 1, var = 0
    assert bn.running_mean.item() == pytest.approx(0.9 * 0.2 + 0.1 * 1)  # 0.28
    assert bn.running_var.item() == pytest.approx(0.9 * 1.3 + 0.1 * 0)  # 1.17
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    bn.eval()  # inference uses E and Var, not the batch
    y = bn(torch.tensor([[3.0]]))
    assert y.item() == pytest.approx(2.0 * (3.0 - 0.28) / (1.17 + 1e-5) ** 0.5 + 0.5, rel=1e-6)
    assert bn.running_mean.item() == pytest.approx(0.28)  # eval leaves them alone

    ref = nn.BatchNorm1d(1)  # torch: the same decay of the mean, unbiased var (n = 2)
    ref(torch.tensor([[0.0], [4.0]]))
    assert ref.running_mean.item() == pytest.approx(0.2)
    assert ref.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 8)


@pytest.mark.parametrize("impl", ["torch", "course"])
def test_gamma_and_beta_are_learned_like_any_parameter(impl):
    from pdl_experiments.data import DataInfo
    from pdl_experiments.models.plain_deep import PlainDeep

    info = DataInfo(name="t", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,))
    model = PlainDeep(info, BatchNormSpec(True, impl), depth=3, width=8)
    norms = [m for m in model.modules() if is_norm(m)]
    assert len(norms) == 3 and all(isinstance(m, CourseBatchNorm) == (impl == "course") for m in norms)
    params = set(map(id, model.parameters()))
    assert all(id(m.weight) in params and id(m.bias) in params for m in norms)
    assert all(
        name.endswith(("running_mean", "running_var", "num_batches_tracked", "mean", "std"))
        for name, _ in model.named_buffers()
    )  # E and Var are buffers, not learned
    before = [(m.weight.clone(), m.bias.clone()) for m in norms]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    for m in norms:
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
        assert m.bias.grad is not None and m.bias.grad.abs().sum() > 0
    opt.step()
    for m, (w, b) in zip(norms, before, strict=True):
        assert not torch.equal(m.weight, w) and not torch.equal(m.bias, b)


def test_norm_spec_switches_the_layer():
    assert isinstance(BatchNormSpec(False)(C), nn.Identity)
    assert BatchNormSpec(False).bias and not BatchNormSpec(True).bias
    layer = BatchNormSpec(True, "course", momentum=0.3, eps=1e-3)(C)
    assert isinstance(layer, CourseBatchNorm) and (layer.momentum, layer.eps) == (0.3, 1e-3)
    assert isinstance(BatchNormSpec(True, "torch")(C, dims=1), nn.BatchNorm1d)


# --- the technique ---------------------------------------------------------------------
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
    per seed. BN on vs off is judged per seed (the gap is ~90 points); the course's layer vs
    torch's on the mean over seeds, with a tolerance from the measured spread: the paired
    difference must not be significant (|mean| within its 95 % t-interval, plus one test
    image), and never more than 2 points."""
    from pdl_experiments.seeds import summarise

    diffs = []
    for seed in (0, 1, 2):
        with_bn, _ = small_run(["model=plain_deep", f"seed={seed}"], name=f"bn{seed}")
        without, _ = small_run(["model=plain_deep", "bn.enabled=false", f"seed={seed}"], name=f"plain{seed}")
        course, _ = small_run(["model=plain_deep", "bn.impl=course", f"seed={seed}"], name=f"course{seed}")
        assert with_bn["test/acc"] >= 0.95 and without["test/acc"] < 0.5
        assert without["bn/grad_ratio_first_last"] <= 0.01 * with_bn["bn/grad_ratio_first_last"]
        diffs.append(course["test/acc"] - with_bn["test/acc"])
    mean, _, ci95 = summarise(diffs)
    one_image = 1 / 359  # the digits test split
    assert abs(mean) <= ci95 + one_image, diffs
    assert abs(mean) <= 0.02, diffs


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
