"""Attention written out: softmax(Q K^T / sqrt(d_k)) V, multi-head, with masks.

The project's own kernel (tests check it against torch's F.scaled_dot_product_attention),
returning the attention weights as well, because looking at them is the point.

Masks are boolean and mean "may attend" (True) like F.scaled_dot_product_attention's
`attn_mask`; they broadcast to (B, H, T, S):
    padding_mask(src != PAD)  -> (B, 1, 1, S)   no query looks at padding
    causal_mask(T)            -> (T, T)         position t sees only positions <= t
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (..., T, d_k), k (..., S, d_k), v (..., S, d_v) -> out (..., T, d_v), weights (..., T, S)

    The leading dims (batch, heads) broadcast; `mask` is bool, True where attention may go.
    """
    # Dividing by sqrt(d_k) keeps the scores' variance near 1 whatever the width, so the
    # softmax does not saturate into a one-hot with vanishing gradients.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def padding_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, S) bool, True on real tokens -> (B, 1, 1, S): every head and query skips padding."""
    return real[:, None, None, :]


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, lower triangle: a decoder position never looks at later outputs."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """h heads of scaled dot-product attention on d_model / h wide projections, concatenated."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.heads, self.d_k = heads, d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, D), memory (B, S, D) -> out (B, T, D), weights (B, H, T, S)."""
        return self.attend(query, *self.project_memory(memory), mask)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, D) -> keys, values (B, H, S, d_k); a decoder may compute them once."""
        b, s, _ = memory.shape
        k = self.k(memory).view(b, s, self.heads, self.d_k).transpose(1, 2)
        v = self.v(memory).view(b, s, self.heads, self.d_k).transpose(1, 2)
        return k, v

    def attend(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, D), projected keys/values (B, H, S, d_k) -> (B, T, D), (B, H, T, S)."""
        b, t, d = query.shape
        q = self.q(query).view(b, t, self.heads, self.d_k).transpose(1, 2)  # (B, H, T, d_k)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, d_k)
        out = out.transpose(1, 2).reshape(b, t, d)  # heads side by side again
        return self.dropout(self.out(out)), weights


class AdditiveAttention(nn.Module):
    """Bahdanau's score v^T tanh(W_q q + W_k k), softmax over the source, weighted sum of values.

    `project(keys)` runs once per source sequence: a decoder asks again at every step,
    and re-projecting the unchanged keys each time would cost as much as the decoder.
    """

    def __init__(self, d_query: int, d_key: int, d_hidden: int):
        super().__init__()
        self.w_q = nn.Linear(d_query, d_hidden, bias=False)
        self.w_k = nn.Linear(d_key, d_hidden)
        self.v = nn.Linear(d_hidden, 1, bias=False)

    def project(self, keys: torch.Tensor) -> torch.Tensor:  # (B, S, D_k) -> (B, S, d)
        return self.w_k(keys)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        projected: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, D_q), keys (B, S, D_k), projected (B, S, d) -> context (B, D_k), (B, S)."""
        scores = self.v(torch.tanh(self.w_q(query).unsqueeze(1) + projected)).squeeze(2)  # (B, S)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        return (weights.unsqueeze(1) @ keys).squeeze(1), weights


class DotAttention(nn.Module):
    """One head of scaled dot-product attention from a decoder state over encoder states."""

    def __init__(self, d_query: int, d_key: int, d_hidden: int):
        super().__init__()
        self.w_q = nn.Linear(d_query, d_hidden, bias=False)
        self.w_k = nn.Linear(d_key, d_hidden, bias=False)

    def project(self, keys: torch.Tensor) -> torch.Tensor:  # (B, S, D_k) -> (B, S, d)
        return self.w_k(keys)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        projected: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, D_q), keys (B, S, D_k), projected (B, S, d) -> context (B, D_k), (B, S)."""
        q = self.w_q(query).unsqueeze(1)  # (B, 1, d)
        m = None if mask is None else mask.unsqueeze(1)  # (B, 1, S)
        # The encoder states themselves are the values: the context is a mix of them.
        context, weights = scaled_dot_product_attention(q, projected, keys, m)
        return context.squeeze(1), weights.squeeze(1)
