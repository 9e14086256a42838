"""technique=adv: the attacks' toll in a real run, the adversarial training step, the defence,
black-box transfer, resume across phases, and the config errors. The `standard` run is
conftest's (shared with test_attacks.py, the attacks themselves)."""

from __future__ import annotations

import json

import pytest
import torch

from pdl_experiments.config import ConfigError
from pdl_experiments.techniques import adv
from pdl_experiments.techniques.attacks import AttackSpec

from helpers import compose, run_small

FAST = ["technique=adv", "trainer.num_threads=1", "trainer.checkpoint_interval_s=0"]
EPS = 0.1


def _spec(name, eps=EPS, **kw):
    return AttackSpec(name, eps, **kw)


def test_fgsm_lowers_accuracy_and_pgd_is_stronger(standard):
    metrics, run_dir, *_ = standard
    assert metrics["test/acc"] > 0.85
    assert metrics["adv/acc/fgsm@0"] == pytest.approx(metrics["test/acc"])
    assert metrics["adv/acc/fgsm@0.1"] < metrics["test/acc"] - 0.15
    for eps in ("0.1", "0.2"):
        assert metrics[f"adv/acc/pgd@{eps}"] <= metrics[f"adv/acc/fgsm@{eps}"]
    assert metrics["adv/robust_acc/fgsm"] == metrics["adv/acc/fgsm@0.1"]  # adv.epsilon=0.1
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["adv/acc/pgd@0.2"] == pytest.approx(metrics["adv/acc/pgd@0.2"])


def test_adversarial_training_step_keeps_train_mode(standard):
    _, _, model, x, y = standard
    task = adv.AdversarialTask(model, _spec("fgsm"), mix=0.5, seed=0)
    task.train()
    model.zero_grad(set_to_none=True)
    out = task.training_step((x, y), trainer=None)
    assert model.training
    assert all(p.grad is None for p in model.parameters())  # the attack left no grads
    assert out["adv_acc"] < out["acc"]  # x' is harder than x
    assert out["loss"].item() == pytest.approx((0.5 * out["clean_loss"] + 0.5 * out["adv_loss"]).item())
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


# All three phases (baseline, train, surrogate), small: 586 training images each for the
# target and the attacker, 10 batches per epoch.
SMALL_DEFENCE = FAST + [
    "trainer.max_epochs=3",
    "adv.surrogate_epochs=2",
    "adv.eval_eps=[0,0.2]",
    "adv.train=true",
    "adv.epsilon=0.2",
    "adv.blackbox=true",
    "adv.grid=4",
    "adv.pgd_steps=5",
    "adv.surrogate_data=queries",
]


@pytest.fixture(scope="module")
def defence(tmp_path_factory):
    return run_small(tmp_path_factory.mktemp("adv_defence"), SMALL_DEFENCE)


def test_defence_and_blackbox_run(defence):
    metrics, run_dir = defence
    for key in (
        "adv/baseline/robust_acc/fgsm",
        "adv/robust_acc/pgd",
        "adv/robust_gain/fgsm",
        "adv/clean_drop",
        "val/robust_acc",
        "val/train_attack_acc",  # fgsm trains; val/robust_acc is PGD's
        "adv/catastrophic_overfit",
        "adv/co_epoch",
        "adv/val_robust_max",
        "adv/surrogate/queries",
    ):
        assert key in metrics
    assert metrics["adv/robust_gain/fgsm"] > 0  # even 3 epochs of the defence help
    assert 0 < metrics["adv/transfer_success@0.2"] < metrics["adv/whitebox_success@0.2"]
    assert metrics["adv/surrogate/agreement"] > 0.5
    # TensorBoard: curves, the example grid and the transfer figure in the run's own file.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    assert {"adv/acc_vs_eps", "adv/examples", "adv/success_vs_eps"} <= set(ea.Tags()["images"])
    assert "adv/acc_vs_eps_x1000/pgd" in ea.Tags()["scalars"]
    # adv.select=robust (the default): the best epoch is the one with the best robust val acc.
    robust = [e.value for e in ea.Scalars("val/robust_acc")][:3]  # the train phase's 3 epochs
    assert metrics["adv/best_epoch"] == 1 + max(range(3), key=lambda i: (robust[i], -i))
    assert metrics["adv/val_robust_max"] == pytest.approx(max(robust))  # the collapse watch saw them
    # The course's raw-gradient attack is reported beside the rescaled one.
    assert {"adv/acc/grad_raw@0.2", "adv/robust_acc/grad_raw", "adv/acc/grad@0.2"} <= set(metrics)
    # The checkpoints hold the target (not the surrogate), loadable without pickle.
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["phase"] == "surrogate" and any(k.startswith("surrogate.") for k in ckpt["task"])
    from pdl_experiments.loading import evaluate_run

    again = evaluate_run(run_dir)
    assert again["test/acc"] == pytest.approx(metrics["test/acc"])
    assert again["adv/acc/pgd@0.2"] == pytest.approx(metrics["adv/acc/pgd@0.2"])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="adv.surrogate_model=vit"):
        run_small(tmp_path, FAST + ["adv.blackbox=true", "adv.surrogate_model=vit"])
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training
    with pytest.raises(ConfigError, match="adv.surrogate_fraction"):
        run_small(tmp_path, FAST + ["adv.surrogate_fraction=1.0"])
    with pytest.raises(ConfigError, match="adv.pgd_step_size"):
        run_small(tmp_path, FAST + ["adv.pgd_step_size=0"])
    with pytest.raises(Exception, match="grad_normalize"):
        compose(FAST + ["adv.grad_normalize=yes"])


def test_sweep_preset_composes():
    cfg = compose(["experiment=adv_eps"])
    assert cfg.technique == "adv" and cfg.adv.baseline is False and cfg.adv.train is False
    assert cfg.adv.pgd_restarts > 1 and cfg.adv.select == "robust"
    for recipe, attack in (("course", "grad"), ("fgsm", "fgsm"), ("fgsm_rs", "fgsm_rs"), ("pgd", "pgd")):
        chosen = compose(["experiment=adv_eps", f"adv_training={recipe}"]).adv
        assert chosen.train is True and chosen.attack == attack
    assert compose(["experiment=adv_eps", "adv_training=course"]).adv.grad_normalize == "none"


def test_collapse_watch_flags_a_fall_of_robust_accuracy_within_one_epoch():
    watch = adv.CollapseWatch(drop=0.2)
    for epoch, robust in enumerate([0.30, 0.45, 0.50, 0.40, 0.05, 0.02], start=1):
        watch(epoch, {"val/robust_acc": robust, "val/acc": 0.9})
    assert watch.summary() == {
        "co_epoch": 5.0,
        "catastrophic_overfit": 1.0,
        "val_robust_max": 0.50,
        "val_robust_last": 0.02,
    }
    steady = adv.CollapseWatch(drop=0.2)
    for epoch, robust in enumerate([0.3, 0.2, 0.35, 0.2], start=1):  # falls of 0.1 and 0.15 only
        steady(epoch, {"val/robust_acc": robust})
    assert steady.summary()["catastrophic_overfit"] == 0.0 and steady.summary()["co_epoch"] == 0.0
