"""models/seq2seq.py and models/transformer.py: the sequence models (the recurrent
encoder-decoder with and without attention, the transformer) on padded input and in greedy
decoding."""

from __future__ import annotations

import pytest
import torch

from pdl_experiments.data.sequences import PAD, load_reverse
from pdl_experiments.models.seq2seq import Seq2Seq
from pdl_experiments.models.transformer import Transformer

SMALL = dict(length=8, vocab=6, n_train=300, n_val=50, n_test=50)


def _models(info):
    return {
        "seq2seq": Seq2Seq(info, hidden=32),
        "seq2seq_bidirectional": Seq2Seq(info, hidden=32, bidirectional=True),
        "seq2seq_attention_dot": Seq2Seq(info, hidden=32, attention=True, score="dot", bidirectional=True),
        "seq2seq_attention_additive": Seq2Seq(info, hidden=32, attention=True, score="additive"),
        "transformer": Transformer(info, d_model=32, heads=4, layers=2, d_ff=64),
    }


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
