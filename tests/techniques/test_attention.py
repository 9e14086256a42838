"""technique=attention: what it refuses, its score option and length preset, and real runs that
learn to reverse along the anti-diagonal. The data, the attention and the models themselves:
data/test_sequences.py, models/test_attention.py, models/test_seq2seq.py."""

from __future__ import annotations

import json

import pytest
import torch

from pdl_experiments.config import ConfigError
from pdl_experiments.data.sequences import PAD, load_reverse

from helpers import compose

# A short reverse task a model learns in a few CPU seconds.
QUICK = [
    "technique=attention",
    "dataset.length=8",
    "dataset.vocab=8",
    "dataset.n_train=1500",
    "dataset.n_val=200",
    "dataset.n_test=200",
    "trainer.batch_size=32",
]


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides,match",
    [
        (["technique=attention", "dataset=digits"], "needs sequence data.*use dataset=copy"),
        (["technique=attention", "model=cnn"], "trains sequence-to-sequence models.*model=seq2seq"),
        (["technique=attention", "attention.heatmaps=-1"], "attention.heatmaps=-1"),
        (["technique=attention", "dataset.length=0"], "dataset.length=0"),
    ],
)
def test_bad_settings_fail_before_training(small_run, overrides, match):
    with pytest.raises(Exception, match=match):
        small_run(overrides)


def test_score_is_an_enum_and_reaches_the_model():
    with pytest.raises(ConfigError, match="attention.score=cosine"):
        compose(["technique=attention", "attention.score=cosine"])
    cfg = compose(["technique=attention", "attention.score=additive"])
    assert cfg.model.score == "additive" and cfg.dataset._target_.endswith("load_reverse")
    assert cfg.trainer.monitor == "val/token_acc"


def test_length_sweep_preset_composes():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        cfg = hydra_compose(
            config_name="config", overrides=["experiment=attention_length"], return_hydra_config=True
        )
    assert cfg.technique == "attention"
    params = cfg.hydra.sweeper.params
    # The claim pairs seq2seq with seq2seq_attention at the same width and budget, by seed.
    assert set(params["model"].split(",")) == {"seq2seq", "seq2seq_attention"}
    assert [int(v) for v in params["dataset.length"].split(",")] == [10, 20, 30]
    assert len(params["seed"].split(",")) >= 5
    assert cfg.model.hidden == 64 and cfg.dataset._target_.endswith("load_reverse")
    assert (cfg.trainer.max_epochs, cfg.trainer.batch_size, cfg.optimizer.lr) == (8, 64, 0.004)


def test_input_half_accuracy_follows_the_source_position():
    """On reverse the input's first half is emitted last; on copy first. Errors placed on the
    tokens copied from the input's start must show in `token_acc_input_first_half` only."""
    from pdl_experiments.techniques.attention import input_half_acc

    d = load_reverse(length=8, vocab=6, n_train=300, n_val=50, n_test=50, min_length=3)
    x, y = d.test  # lengths 3..8, right-padded
    n = (x != PAD).sum(1, keepdim=True)
    t = torch.arange(x.shape[1])
    for task, target, src in (("reverse", y, n - 1 - t), ("copy", x, t.expand_as(x))):
        pred = target.clone()
        from_start = (2 * src < n) & (target != PAD)  # (N, T)
        pred[from_start] = PAD  # every token copied from the input's first half wrong
        acc = input_half_acc(task, x, target, pred, PAD)
        assert acc == {"token_acc_input_first_half": 0.0, "token_acc_input_second_half": 1.0}
    assert input_half_acc("sort", x, y, y, PAD) == {}  # a sorted token has no single source


# ---------------------------------------------------------------------------- runs
def _argmax_offsets(run_dir) -> dict[str, torch.Tensor]:
    """Per attention map of a saved run: argmax input position minus the mirrored one."""
    from pdl_experiments.loading import load_run

    loaded = load_run(run_dir)
    model, x = loaded.model, loaded.data.test[0]
    with torch.no_grad():
        pred = model.generate(x)
        _, maps = model(x, model.shift_right(pred), return_attention=True)
    mirrored = torch.arange(x.shape[1] - 1, -1, -1)  # output t comes from input L-1-t
    return {name: w.argmax(-1) - mirrored for name, w in maps.items()}  # (N, T) each


def test_attention_learns_reverse_along_the_anti_diagonal(small_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pdl_experiments.loading import evaluate_run

    metrics, run_dir = small_run(
        [*QUICK, "model=seq2seq_attention", "dataset.length=6", "trainer.max_epochs=8"]
    )
    assert metrics["test/token_acc"] > 0.95, metrics
    assert metrics["test/attn_align_pm1"] > 0.8, metrics
    # Reverse, one length: the input's first half is the output's second half.
    assert metrics["test/token_acc_input_first_half"] == pytest.approx(metrics["test/token_acc_second_half"])
    assert metrics["test/token_acc_input_second_half"] == pytest.approx(metrics["test/token_acc_first_half"])

    # The anti-diagonal, measured on the saved model: for most output positions t the
    # strongest attention is on input L-1-t, or its neighbour (a recurrent state also
    # remembers the previous token, and the GRU decoder may read it from there).
    off = _argmax_offsets(run_dir)["attention"]
    assert (off.abs() <= 1).float().mean() > 0.8

    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert "model.attend.w_q.weight" in ckpt["task"]
    assert evaluate_run(run_dir)["test/token_acc"] == pytest.approx(metrics["test/token_acc"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/token_acc", "val/seq_acc", "test/seq_acc", "test/attn_align"} <= set(saved)

    ea = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"attention/heatmaps", "attention/position_acc"} <= set(ea.Tags()["images"])
    assert len(ea.Scalars("test/position_acc")) == 6
    assert len(ea.Scalars("val/token_acc")) >= 8  # per epoch (+ the final value)


def test_transformer_attends_to_the_mirrored_position(small_run):
    metrics, run_dir = small_run([*QUICK, "model=transformer", "trainer.max_epochs=4"])
    assert metrics["test/token_acc"] > 0.95, metrics
    # Exactly the anti-diagonal in at least one decoder layer's cross-attention.
    offsets = _argmax_offsets(run_dir)
    hits = {name: float((off == 0).float().mean()) for name, off in offsets.items()}
    assert max(hits.values()) > 0.8, hits
    assert metrics["test/attn_align"] == pytest.approx(max(hits.values()), abs=0.05)
