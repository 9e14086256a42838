"""models/attention.py: the hand-written attention against torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pdl_experiments.models.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)


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
