"""technique=gan: the score, the losses, a real (tiny) run, the judge cache and resume. The
models themselves: models/test_gan.py."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose, run_small

# A tiny budget: 300 training digits (10 GAN batches of 32, 5 judge batches of 64), a 2-epoch
# judge, 3 GAN epochs.
TINY = [
    "technique=gan",
    "dataset.subset=300",
    "gan.classifier_epochs=2",
    "trainer.max_epochs=3",
    "gan.n_samples=200",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One judge cache for the module's runs (the first run trains and stores the judge)."""
    return tmp_path_factory.mktemp("judge_cache")


def tiny(cache, *extra):
    return [*TINY, f"gan.cache_dir={cache}", *extra]


def final(metrics: dict) -> dict:
    """The metrics that must be reproducible (timings are not)."""
    return {k: v for k, v in metrics.items() if "time" not in k and "wall" not in k}


# ---------------------------------------------------------------- pieces


def test_frechet_distance_matches_scipy_sqrtm():
    import numpy as np
    from scipy import linalg

    from pdl_experiments.techniques.gan import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 12, generator=g, dtype=torch.float64)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    b = torch.randn(300, 12, generator=g, dtype=torch.float64) @ mix + 0.5  # other mean and covariance
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    s_a, s_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_class_shares_flag_mode_collapse():
    from pdl_experiments.techniques.gan import class_shares

    collapsed = torch.zeros(100, 10)
    collapsed[:, 3] = 10.0  # every sample is a confident "3"
    s = class_shares(collapsed)
    assert s["class_coverage"] == pytest.approx(0.1) and s["min_class_share"] == 0.0
    assert s["mean_confidence"] > 0.99
    spread = torch.eye(10).repeat(10, 1) * 5  # ten of each class
    assert class_shares(spread)["class_coverage"] == 1.0
    assert class_shares(spread)["min_class_share"] == pytest.approx(0.1)


def test_minimax_generator_loss_saturates_where_nonsaturating_does_not():
    """While D confidently rejects G's samples (logit -6), log(1 - D(G(z))) has almost no
    gradient; -log D(G(z)) has a strong one: why non-saturating is the default."""
    from pdl_experiments.techniques.gan import generator_loss

    grads = {}
    for kind in ("minimax", "nonsaturating"):
        logit = torch.tensor([-6.0], requires_grad=True)
        generator_loss(logit, kind).backward()
        grads[kind] = logit.grad.item()
    # Both push D(G(z)) up (descent raises the logit), one with almost no force.
    assert -0.01 < grads["minimax"] < 0 and grads["nonsaturating"] < -0.99


def test_bad_gan_configs_fail_before_training(tmp_path, cache):
    from pdl_experiments.config import ConfigError

    with pytest.raises(ConfigError, match="gan.beta1"):
        run_small(tmp_path, tiny(cache, "gan.beta1=1.0"), name="b1")
    with pytest.raises(ConfigError, match="trains GANs.*model=dcgan"):
        run_small(tmp_path, tiny(cache, "model=cnn"), name="cnn")
    assert not (tmp_path / "cnn" / "checkpoints").exists()  # nothing trained
    with pytest.raises(Exception) as bad_loss:
        compose(["technique=gan", "gan.loss=wasserstein"])
    from pdl_experiments.cli.messages import one_line

    assert "nonsaturating" in one_line(bad_loss.value)  # the line pdl-run prints names the choices


# ---------------------------------------------------------------- a real run
def test_tiny_run_outputs_scores_and_reloads(tmp_path, cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pdl_experiments import load_run
    from pdl_experiments.loading import evaluate_run
    from pdl_experiments.techniques.gan import GanTask

    metrics, run_dir = run_small(tmp_path, tiny(cache), name="first")
    for key in (
        "gan/fid",
        "gan/fid_untrained",
        "gan/class_coverage",
        "gan/min_class_share",
        "gan/mean_confidence",
        "gan/fid_real",
        "gan/judge_test_acc",
    ):
        assert key in metrics
    assert metrics["gan/judge_test_acc"] > 0.6  # 2 epochs on 300 digits: a usable judge
    assert metrics["gan/fid_untrained"] > metrics["gan/fid_real"]
    assert metrics["gan/fid_real_n"] == 200  # the floor at the score's own sample size
    assert 0 < metrics["gan/class_coverage"] <= 1

    samples = torch.load(run_dir / "samples.pt", weights_only=True)
    assert samples.shape == (200, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert (run_dir / "samples.png").stat().st_size > 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(ckpt["optimizers"]) == {"D", "G"}  # both players' Adam states
    assert any(k.startswith("gan.discriminator.") for k in ckpt["task"])

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    for tag in (
        "train/loss_D",
        "train/loss_G",
        "train/D_x",
        "train/D_G_z",
        "val/fid",
        "val/class_coverage",
        "lr/D",
        "lr/G",
    ):
        assert len(acc.Scalars(tag)) == 3, tag
    assert [e.step for e in acc.Images("gan/samples")] == [0, 1, 2, 3]  # untrained + per epoch
    assert "gan/samples_by_class" in acc.Tags()["images"]

    # load_run gives the task back (generator inside); pdl-eval recomputes the same score.
    loaded = load_run(run_dir)
    assert isinstance(loaded.model, GanTask) and not loaded.model.training
    assert loaded.model(torch.randn(4, 64)).shape == (4, 1, 8, 8)
    assert torch.equal(loaded.model.sample(200, 2), samples)  # the saved samples, again
    again = evaluate_run(run_dir)
    assert again["gan/fid"] == pytest.approx(metrics["gan/fid"], rel=1e-9)
    assert again["gan/class_coverage"] == metrics["gan/class_coverage"]

    # A second run finds the judge in the cache and must end exactly where the first did.
    metrics2, run_dir2 = run_small(tmp_path, tiny(cache), name="second")
    assert final(metrics2) == final(metrics)
    assert torch.equal(torch.load(run_dir2 / "samples.pt", weights_only=True), samples)
    assert json.loads((run_dir2 / "metrics.json").read_text())["gan/fid"] == metrics["gan/fid"]


def test_dcgan_with_minimax_loss_runs(tmp_path, cache):
    metrics, run_dir = run_small(
        tmp_path, tiny(cache, "model=dcgan", "gan.loss=minimax", "trainer.max_epochs=1")
    )
    assert metrics["gan/fid"] > 0 and metrics["params/generator"] > 0
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["task"]["gan.generator.net.0.weight"].dim() == 4  # a transposed conv: the conv G


def test_the_floor_depends_on_the_sample_sizes():
    """Why gan/fid_real is measured with as many real images as the score has samples: the
    Frechet distance of two samples of one Gaussian shrinks as the samples grow."""
    from pdl_experiments.techniques.gan import frechet_distance

    g = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randn(n, 64, generator=g)
    small = [frechet_distance(draw(359), draw(269)) for _ in range(5)]
    equal = [frechet_distance(draw(359), draw(1000)) for _ in range(5)]
    assert min(small) > 1.3 * max(equal)


# ---------------------------------------------------------------- the preset
def test_losses_preset_pairs_both_losses_on_both_pairs_by_seed():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        cfg = hydra_compose(
            config_name="config", overrides=["experiment=gan_losses"], return_hydra_config=True
        )
    params = cfg.hydra.sweeper.params
    assert cfg.technique == "gan" and cfg.trainer.max_epochs == 30
    assert set(params["model"].split(",")) == {"gan_mlp", "dcgan"}
    assert set(params["gan.loss"].split(",")) == {"nonsaturating", "minimax"}
    assert len(params["seed"].split(",")) >= 5
    # One sample size for every job: Frechet distances compare only at equal sizes.
    assert "gan.n_samples" not in params and cfg.gan.n_samples == 1000
    # 28x28 images (as dataset=mnist5k) compose with it; the models fit them
    # (tests/models/test_gan.py).
    from pdl_experiments.registry import MODELS

    mnist = compose(["experiment=gan_losses", "dataset=synthetic", "dataset.shape=mnist", "model=dcgan"])
    assert mnist.dataset.shape == "mnist" and mnist.model._target_ == MODELS["dcgan"].target
