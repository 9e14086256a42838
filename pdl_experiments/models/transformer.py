"""An encoder-decoder Transformer on the project's own attention (models/attention.py).

No recurrence at all: the encoder's self-attention lets every input position read every
other one, the decoder's masked self-attention reads the outputs so far, and its
cross-attention reads the whole encoded input, so the first input symbol is one attention
step away from the last output however long the sequence. Pre-LayerNorm blocks (the norm
inside each residual branch) train without a warm-up schedule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .attention import MultiHeadAttention, causal_mask, padding_mask
from .seq2seq import Seq2SeqModel


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, S, D)
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)[0]
        return x + self.ff(self.norm2(x))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(
        self, y: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor, memory_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """y (B, T, D), memory (B, S, D) -> (B, T, D), cross-attention weights (B, H, T, S)."""
        h = self.norm1(y)
        y = y + self.self_attn(h, h, self_mask)[0]
        out, weights = self.cross_attn(self.norm2(y), memory, memory_mask)
        y = y + out
        return y + self.ff(self.norm3(y)), weights

    def step(
        self,
        y: torch.Tensor,
        past: torch.Tensor | None,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One new position for greedy decoding: y (B, 1, D), past (B, t, D) or None.

        `past` holds the normed inputs of the earlier positions (what their self-attention
        keys and values are made from) and `memory_kv` the cross-attention's projected
        memory; neither changes, so only the new position is computed. No causal mask
        needed: the past is all there is. Returns (B, 1, D), the new past.
        """
        h = self.norm1(y)
        past = h if past is None else torch.cat([past, h], dim=1)  # (B, t+1, D)
        y = y + self.self_attn(h, past)[0]
        y = y + self.cross_attn.attend(self.norm2(y), *memory_kv, memory_mask)[0]
        return y + self.ff(self.norm3(y)), past


@MODELS.register("transformer", kind="seq2seq")
class Transformer(Seq2SeqModel):
    def __init__(
        self,
        info: DataInfo,
        norm=None,  # LayerNorm is part of the architecture; bn.* does not apply
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        d_ff: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__(info)
        self.d_model = d_model
        self.embed = nn.Embedding(self.vocab_size, d_model, padding_idx=self.pad)
        # Learned positions: the only thing telling attention *where* a token sits.
        self.src_pos = nn.Embedding(self.max_len, d_model)
        self.tgt_pos = nn.Embedding(self.max_len, d_model)
        self.encoder = nn.ModuleList(EncoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, self.vocab_size)

    def _embed(self, tokens: torch.Tensor, pos: nn.Embedding) -> torch.Tensor:
        p = torch.arange(tokens.shape[1], device=tokens.device)
        # Token and position embeddings at the same scale (both N(0, 1)): the position is
        # what reverse is about, and must not drown under the token.
        return self.dropout(self.embed(tokens) + pos(p))  # (B, L, D)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, D), mask (B, 1, 1, S)."""
        mask = padding_mask(src != self.pad)
        x = self._embed(src, self.src_pos)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor):
        """tgt_in (B, T) -> logits (B, T, V), cross-attention per layer [(B, H, T, S)]."""
        y = self._embed(tgt_in, self.tgt_pos)
        self_mask = causal_mask(tgt_in.shape[1], tgt_in.device)
        maps = []
        for layer in self.decoder:
            y, weights = layer(y, memory, self_mask, memory_mask)
            maps.append(weights)
        return self.out(self.dec_norm(y)), maps

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        memory, mask = self.encode(src)
        logits, maps = self.decode(tgt_in, memory, mask)
        if not return_attention:
            return logits
        # Heads averaged: one (B, T, S) map per decoder layer's cross-attention.
        return logits, {f"layer{i + 1}": w.mean(1) for i, w in enumerate(maps)}

    @torch.no_grad()
    def generate(self, src: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        memory, mask = self.encode(src)
        token = torch.full_like(src[:, :1], self.bos)  # (B, 1)
        pasts: list[torch.Tensor | None] = [None] * len(self.decoder)
        decoder = cast(Iterable[DecoderLayer], self.decoder)  # the ModuleList built in __init__
        memory_kv = [layer.cross_attn.project_memory(memory) for layer in decoder]
        out = []
        for t in range(steps or src.shape[1]):
            y = self.dropout(self.embed(token) + self.tgt_pos.weight[t])
            for i, layer in enumerate(decoder):
                y, pasts[i] = layer.step(y, pasts[i], memory_kv[i], mask)  # (B, 1, D)
            token = self.out(self.dec_norm(y)).argmax(-1)  # (B, 1): fed back next step
            out.append(token)
        return torch.cat(out, dim=1)  # (B, T)
