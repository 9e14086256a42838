"""GRU encoder-decoder, with or without attention: the "old Seq2Seq" and its fix.

Without attention the decoder starts from the encoder's final state and sees nothing
else of the input: a whole sequence squeezed into one `hidden`-wide vector, which holds
the last symbols read well and the first ones badly. With attention (Bahdanau's recipe),
each decoder step also reads a softmax-weighted mix of *all* encoder states, scored
against its own state, so no symbol has to survive the trip through the bottleneck.

    model=seq2seq            Seq2Seq(attention=False, bidirectional=False)
    model=seq2seq_attention  Seq2Seq(attention=True, bidirectional=True, score=dot|additive)

Bahdanau's encoder is bidirectional: each state then knows the symbols on both sides of
its position, which lets the decoder find its place by content and learn reverse in a
few epochs (a left-to-right encoder gets there too, several times slower).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data import DataInfo
from ..registry import MODELS
from .attention import AdditiveAttention, DotAttention

SCORES = ("dot", "additive")


class Encoded(NamedTuple):
    states: torch.Tensor  # (B, S, H) every encoder state: the attention's values
    keys: torch.Tensor | None  # (B, S, d) the states projected once for scoring
    real: torch.Tensor  # (B, S) bool, False on padding


class Seq2SeqModel(nn.Module):
    """What technique=attention needs from a sequence model.

    forward(src, tgt_in)                         -> logits (B, T, V), teacher forcing
    forward(src, tgt_in, return_attention=True)  -> (logits, {name: weights (B, T, S)})
    generate(src)                                -> (B, S) tokens, greedy, each fed back
    """

    def __init__(self, info: DataInfo):
        super().__init__()
        if info.kind != "sequence":
            raise ValueError(
                f"{type(self).__name__} needs a sequence dataset (dataset=copy|reverse|sort), not {info.name}"
            )
        self.pad = int(info.extra.get("pad", 0))
        self.bos = int(info.extra.get("bos", 1))
        self.vocab_size = int(info.num_classes)
        self.max_len = int(info.in_shape[0])

    def shift_right(self, y: torch.Tensor) -> torch.Tensor:
        """Decoder inputs under teacher forcing: BOS, then the target without its last token."""
        bos = torch.full_like(y[:, :1], self.bos)
        return torch.cat([bos, y[:, :-1]], dim=1)

    @property
    def has_attention(self) -> bool:
        return True

    def generate(self, src: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """src (B, S) -> (B, steps or S) tokens; every model implements it."""
        raise NotImplementedError


@MODELS.register("seq2seq", kind="seq2seq")
class Seq2Seq(Seq2SeqModel):
    def __init__(
        self,
        info: DataInfo,
        norm=None,  # batch norm has no place in a recurrent net; accepted for the zoo's signature
        hidden: int = 64,
        embed: int | None = None,
        attention: bool = False,
        score: str = "dot",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__(info)
        score = str(score)
        if score not in SCORES:
            raise ValueError(f"attention.score={score}: expected one of {', '.join(SCORES)}")
        embed = embed or hidden
        self.attention, self.score, self.bidirectional = attention, score, bidirectional
        self.embed = nn.Embedding(self.vocab_size, embed, padding_idx=self.pad)
        if bidirectional and hidden % 2:
            raise ValueError(f"model.hidden={hidden} must be even for a bidirectional encoder")
        # Bidirectional: two half-width GRUs, so every encoder state is still `hidden` wide.
        self.encoder = nn.GRU(
            embed, hidden // 2 if bidirectional else hidden, batch_first=True, bidirectional=bidirectional
        )
        ctx = hidden if attention else 0
        self.cell = nn.GRUCell(embed + ctx, hidden)
        if attention:
            make = DotAttention if score == "dot" else AdditiveAttention
            self.attend = make(hidden, hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + ctx, self.vocab_size)

    @property
    def has_attention(self) -> bool:
        return self.attention

    def encode(self, src: torch.Tensor) -> tuple[Encoded, torch.Tensor]:
        """src (B, S) -> what the decoder may read, and its first state (B, H)."""
        real = src != self.pad
        # Packed, so padding never enters a state: the forward GRU stops at the last real
        # token and the backward one starts there.
        lengths = real.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(
            self.dropout(self.embed(src)), lengths, batch_first=True, enforce_sorted=False
        )
        states, h_n = self.encoder(packed)  # h_n: (directions, B, H / directions)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])  # (B, S, H)
        final = torch.cat(list(h_n), dim=1)  # (B, H): all the decoder gets without attention
        keys = self.attend.project(states) if self.attention else None
        return Encoded(states, keys, real), final

    def step(
        self, token: torch.Tensor, state: torch.Tensor, enc: Encoded
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One decoder step: token (B,), state (B, H) -> logits (B, V), state, attention (B, S)."""
        inp = self.dropout(self.embed(token))  # (B, E)
        if not self.attention:
            state = self.cell(inp, state)
            return self.out(self.dropout(state)), state, None
        # Bahdanau: the previous state asks where to look for the token it emits now.
        context, weights = self.attend(state, enc.states, enc.keys, enc.real)  # (B, H), (B, S)
        state = self.cell(torch.cat([inp, context], dim=1), state)
        return self.out(self.dropout(torch.cat([state, context], dim=1))), state, weights

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        enc, state = self.encode(src)
        logits_per_step: list[torch.Tensor] = []
        weights_per_step: list[torch.Tensor] = []  # stays empty without attention
        for t in range(tgt_in.shape[1]):
            step_logits, state, weights = self.step(tgt_in[:, t], state, enc)
            logits_per_step.append(step_logits)
            if weights is not None:
                weights_per_step.append(weights)
        logits = torch.stack(logits_per_step, dim=1)  # (B, T, V)
        if not return_attention:
            return logits
        maps = {"attention": torch.stack(weights_per_step, dim=1)} if self.attention else {}  # (B, T, S)
        return logits, maps

    @torch.no_grad()
    def generate(self, src: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        enc, state = self.encode(src)
        token = torch.full_like(src[:, 0], self.bos)
        out = []
        for _ in range(steps or src.shape[1]):
            logits, state, _ = self.step(token, state, enc)
            token = logits.argmax(-1)  # greedy: the model's own guess is the next input
            out.append(token)
        return torch.stack(out, dim=1)  # (B, T)
