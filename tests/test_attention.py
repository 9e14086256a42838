"""technique=attention: sequence data, the hand-written attention, the three models, the run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdl_experiments.config import ConfigError
from pdl_experiments.data import DataError
from pdl_experiments.data.sequences import PAD, load_copy, load_reverse, load_sort
from pdl_experiments.models.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from pdl_experiments.models.seq2seq import Seq2Seq
from pdl_experiments.models.transformer import Transformer

from helpers import compose

SMALL = dict(length=8, vocab=6, n_train=300, n_val=50, n_test=50)
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


def _models(info):
    return {
        "seq2seq": Seq2Seq(info, hidden=32),
        "seq2seq_bidirectional": Seq2Seq(info, hidden=32, bidirectional=True),
        "seq2seq_attention_dot": Seq2Seq(info, hidden=32, attention=True, score="dot", bidirectional=True),
        "seq2seq_attention_additive": Seq2Seq(info, hidden=32, attention=True, score="additive"),
        "transformer": Transformer(info, d_model=32, heads=4, layers=2, d_ff=64),
    }


# ---------------------------------------------------------------------------- data
def test_sequence_tasks_are_seeded_distinct_and_correct():
    a, b = load_reverse(**SMALL, seed=3), load_reverse(**SMALL, seed=3)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train[0], load_reverse(**SMALL, seed=4).train[0])
    x, y = a.train
    assert x.dtype == torch.long and x.shape == (300, 8)
    assert torch.equal(y, x.flip(1))
    assert int(x.min()) >= 2 and int(x.max()) < 2 + 6  # symbols after PAD and BOS
    assert a.info.kind == "sequence" and a.info.in_shape == (8,) and a.info.num_classes == 8
    rows = [tuple(r) for split in (a.train, a.val, a.test) for r in split[0].tolist()]
    assert len(set(rows)) == len(rows)  # no test sequence was seen in training
    c = load_copy(**SMALL)
    assert torch.equal(c.train[0], c.train[1])
    s = load_sort(**SMALL)
    assert torch.equal(s.train[1], s.train[0].sort(1).values)


def test_variable_lengths_are_right_padded():
    d = load_reverse(**SMALL, min_length=3)
    x, y = d.train
    lengths = (x != PAD).sum(1)
    assert int(lengths.min()) == 3 and int(lengths.max()) == 8
    for row_x, row_y, n in zip(x[:20], y[:20], lengths[:20], strict=True):
        assert (row_x[n:] == PAD).all() and (row_x[:n] != PAD).all()
        assert torch.equal(row_y[:n], row_x[:n].flip(0)) and (row_y[n:] == PAD).all()
    s = load_sort(**SMALL, min_length=3).train
    n = int((s[0][0] != PAD).sum())
    assert torch.equal(s[1][0, :n], s[0][0, :n].sort().values) and (s[1][0, n:] == PAD).all()


def test_impossible_sizes_name_the_key():
    with pytest.raises(DataError, match="dataset"):
        load_reverse(length=3, vocab=2, n_train=100, n_val=1, n_test=1)
    with pytest.raises(DataError, match="dataset.length=0"):
        load_reverse(length=0)


# ---------------------------------------------------------------------------- attention
@pytest.mark.parametrize("masks", ["none", "padding", "causal", "padding+causal"])
def test_attention_matches_torch(masks):
    g = torch.Generator().manual_seed(0)
    b, h, t, d = 3, 4, 7, 16
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    real = torch.ones(b, t, dtype=torch.bool)
    real[0, 5:] = False
    real[2, 3:] = False
    mask = None
    if "padding" in masks:
        mask = padding_mask(real)  # (B, 1, 1, S)
    if "causal" in masks:
        mask = causal_mask(t) if mask is None else mask & causal_mask(t)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, h, t), atol=1e-6, rtol=0)
    if mask is not None:
        assert (weights[~mask.expand_as(weights)] == 0).all()


def test_multi_head_attention_matches_torch_module():
    torch.manual_seed(0)
    d, heads, b, t, s = 32, 4, 2, 5, 6
    ours = MultiHeadAttention(d, heads)
    ref = nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    query, memory = torch.randn(b, t, d), torch.randn(b, s, d)
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out, w = ours(query, memory, padding_mask(real))
    # torch's module marks what may NOT be attended.
    ref_out, ref_w = ref(query, memory, memory, key_padding_mask=~real, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", list(_models(load_reverse(**SMALL).info)))
def test_padding_does_not_change_real_outputs(name):
    torch.manual_seed(0)
    data = load_reverse(**SMALL, min_length=3)
    model = _models(data.info)[name].eval()
    x, y = data.train
    n = (x != PAD).sum(1)
    i = int(torch.nonzero(n == 5)[0])  # a sequence of 5 symbols, padded to 8
    src, tgt_in = x[i : i + 1], model.shift_right(y[i : i + 1])
    with torch.no_grad():
        padded = model(src, tgt_in)[0, :5]
        alone = model(src[:, :5], tgt_in[:, :5])[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(_models(load_reverse(**SMALL).info)))
def test_greedy_decoding_is_the_teacher_forced_pass_over_its_own_outputs(name):
    torch.manual_seed(0)
    data = load_reverse(**SMALL)
    model = _models(data.info)[name].eval()
    x = data.val[0]
    with torch.no_grad():
        pred = model.generate(x)
        logits, maps = model(x, model.shift_right(pred), return_attention=True)
    assert pred.shape == x.shape
    assert torch.equal(logits.argmax(-1), pred)
    for w in maps.values():
        assert w.shape == (len(x), 8, 8)
        torch.testing.assert_close(w.sum(-1), torch.ones(len(x), 8))
    assert bool(maps) == ("attention" in name or name == "transformer")


def test_sequence_models_refuse_image_data():
    from pdl_experiments.data.digits import load_digits

    with pytest.raises(ValueError, match="sequence dataset"):
        Transformer(load_digits().info)


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

    d = load_reverse(**SMALL, min_length=3)
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
