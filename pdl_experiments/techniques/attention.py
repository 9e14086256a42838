"""Attention: why the old seq2seq forgets, and how attention and the Transformer fix it.

One recipe for three models on a toy sequence task (dataset=copy|reverse|sort):
    train with teacher forcing (the decoder reads the true previous token)
    -> evaluate by greedy decoding (it reads its own previous guess, as in real use)
    -> accuracy per output position and per half of the input (copy, reverse),
       attention heatmaps, alignment of attention.

model=seq2seq hands its decoder only the encoder's final state: on reverse the first
outputs (the last inputs, just read) come out right and the last outputs (the first
inputs, long overwritten) do not, and the longer the input the worse. model=
seq2seq_attention and model=transformer look back at every input position, and their
heatmaps on reverse show the anti-diagonal: output t reads input L-1-t (the GRU's mostly
one column to the right, from the state that has just read that symbol's neighbour).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data import DataSplits, TensorLoader
from ..data.sequences import source_positions
from ..models import count_params
from ..models.seq2seq import Seq2Seq, Seq2SeqModel
from ..registry import TECHNIQUES, Needs, Technique
from ..training.task import Task

log = logging.getLogger("pdl_experiments")

NEEDS = Needs(model=("seq2seq",), data=("sequence",))  # what it works with (config/checks.py)
# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
# A handful (tests/run/test_outputs.py): val/seq_acc stays in metrics.json, not the columns.
HEADLINE = ("test/token_acc", "test/token_acc_input_first_half", "test/seq_acc", "val/token_acc")


# ----------------------------------------------------------------------------- the recipe
def run(ctx) -> dict[str, float]:
    check(ctx)
    cfg, info = ctx.cfg, ctx.data.info
    task_name = info.extra["task"]
    model: Seq2SeqModel = ctx.build_model()
    task = Seq2SeqTask(model)
    ctx.fit(task)  # teacher forcing; ends on the weights with the best val/token_acc

    model.eval()
    metrics = {f"val/{k}": v for k, v in task.evaluate(ctx.loader("val")).items()}
    scores = decode_scores(model, ctx.loader("test"))
    metrics.update({f"test/{k}": v for k, v in scores.summary().items()})
    acc = scores.position_acc()  # (T,)
    half = len(acc) // 2
    # The two halves of the *output*; on reverse the second half comes from the input's start.
    metrics["test/token_acc_first_half"] = float(acc[:half].mean())
    metrics["test/token_acc_second_half"] = float(acc[half:].mean())
    metrics["params"] = count_params(model)
    metrics["train/time_s"] = ctx.train_time_s

    x_test, y_test = ctx.data.test
    pred = torch.cat(scores.preds)
    # The two halves of the *input* (copy, reverse): the start is what a fixed-size state forgets.
    halves = input_half_acc(task_name, x_test, y_test, pred, model.pad)
    metrics.update({f"test/{k}": v for k, v in halves.items()})
    title = f"{_describe(model)} on {task_name}, L={info.in_shape[0]}"
    if model.has_attention:
        maps, align = attention_alignment(model, x_test, pred, task_name)
        metrics.update({f"test/attn_align/{name}": value for name, value in align.items()})
        metrics.update(_headline_alignment(align))
    if ctx.logger is not None:
        # Accuracy by position as a line (step = position) and as a figure.
        for t, a in enumerate(acc.tolist()):
            ctx.logger.scalars({"test/position_acc": a}, t)
        ctx.logger.figure("attention/position_acc", position_figure(acc, task_name, title))
        n = min(int(cfg.attention.heatmaps), len(x_test))
        if model.has_attention and n > 0:
            fig = heatmap_figure(maps, x_test, pred, y_test, n, model.pad, task_name, title)
            ctx.logger.figure("attention/heatmaps", fig)
    log.info(
        "test token_acc=%.4f seq_acc=%.4f (first half of outputs %.3f, second half %.3f)",
        metrics["test/token_acc"],
        metrics["test/seq_acc"],
        metrics["test/token_acc_first_half"],
        metrics["test/token_acc_second_half"],
    )
    return metrics


class Seq2SeqTask(Task):
    """Cross-entropy over target tokens (padding ignored), decoder fed the true prefix."""

    def __init__(self, model: Seq2SeqModel):
        super().__init__()
        self.model = model

    def training_step(self, batch, trainer):
        x, y = batch  # (B, L) each
        logits = self.model(x, self.model.shift_right(y))  # (B, T, V)
        loss = token_loss(logits, y, self.model.pad)
        real = y != self.model.pad
        correct = (logits.argmax(-1) == y) & real
        # Teacher-forced accuracy: an optimistic number, val/token_acc is the honest one.
        return {"loss": loss, "tf_token_acc": correct.sum() / real.sum().clamp_min(1)}

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        return decode_scores(self.model, loader).summary()


def token_loss(logits: torch.Tensor, y: torch.Tensor, pad: int) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=pad)


@dataclass
class DecodeScores:
    """Greedy-decoding results over a split, kept per output position."""

    correct: torch.Tensor  # (T,) right tokens at each output position
    count: torch.Tensor  # (T,) real (non-pad) target tokens at each position
    seq_correct: int = 0
    n_seq: int = 0
    loss_sum: float = 0.0  # teacher-forced, per token
    preds: list = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        tokens = max(int(self.count.sum()), 1)
        return {
            "token_acc": float(self.correct.sum()) / tokens,
            "seq_acc": self.seq_correct / max(self.n_seq, 1),
            "loss": self.loss_sum / tokens,
        }

    def position_acc(self) -> torch.Tensor:
        return self.correct / self.count.clamp_min(1)  # (T,)


@torch.no_grad()
def decode_scores(model: Seq2SeqModel, loader: Any) -> DecodeScores:
    length = model.max_len
    scores = DecodeScores(torch.zeros(length), torch.zeros(length))
    for x, y in loader:
        real = y != model.pad  # (B, T)
        pred = model.generate(x, y.shape[1])  # (B, T), no teacher forcing
        right = (pred == y) & real
        scores.correct += right.sum(0).float().cpu()
        scores.count += real.sum(0).float().cpu()
        scores.seq_correct += int((right == real).all(1).sum())
        scores.n_seq += len(y)
        logits = model(x, model.shift_right(y))
        scores.loss_sum += float(token_loss(logits, y, model.pad)) * int(real.sum())
        scores.preds.append(pred)
    return scores


def input_half_acc(
    task: str, x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, pad: int
) -> dict[str, float]:
    """Greedy token accuracy of the outputs copied from the first / second half of the input.

    Only for copy and reverse, where each output token has one source position s; it is in
    the first half when s < n / 2 (n real input tokens; an odd middle goes to the second
    half). On reverse the input's first half is the output's second half: the tokens read
    first and emitted last, the ones a fixed-size encoder state has overwritten by then
    (Cho et al. 2014; Bahdanau et al. 2015, Fig. 2).
    """
    if task not in ("copy", "reverse"):
        return {}
    real = y != pad  # (N, T)
    src = source_positions(task, x, y).float().argmax(2)  # (N, T) where each output comes from
    first = 2 * src < (x != pad).sum(1, keepdim=True)  # (N, T)
    right = pred[:, : y.shape[1]] == y
    out = {}
    for name, part in (("first", first & real), ("second", ~first & real)):
        out[f"token_acc_input_{name}_half"] = float((right & part).sum()) / max(int(part.sum()), 1)
    return out


@torch.no_grad()
def attention_alignment(
    model: Seq2SeqModel, x: torch.Tensor, pred: torch.Tensor, task: str
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Attention maps of the greedy outputs, and how often each map's argmax hits the source.

    The maps come from one teacher-forced pass over the model's own outputs: with the
    decoder fed what it generated, every step sees exactly what it saw while decoding.
    Per map: `<name>` = share of output tokens whose strongest attention is exactly on the
    input position the token comes from, `<name>_pm1` = within one position of it. A
    recurrent encoder's state also remembers its neighbours' tokens, so a GRU decoder
    may read token j from state j+1: an alignment one column off, still a (shifted) diagonal.
    """
    _, maps = model(x, model.shift_right(pred), return_attention=True)  # {name: (B, T, S)}
    target = source_positions(task, x, pred)  # (B, T, S) where each output token comes from
    t = target.float()
    near = (t + F.pad(t[..., 1:], (0, 1)) + F.pad(t[..., :-1], (1, 0))) > 0  # +-1 position
    # Only output positions with a real source count (pads, sorted symbols the model made up).
    counted = target.any(2) & (x != model.pad)  # (B, T); outputs are as long as inputs
    n = max(int(counted.sum()), 1)
    align = {}
    for name, w in maps.items():
        best = w.argmax(2, keepdim=True)  # (B, T, 1)
        align[name] = float((target.gather(2, best).squeeze(2) & counted).sum()) / n
        align[f"{name}_pm1"] = float((near.gather(2, best).squeeze(2) & counted).sum()) / n
    return maps, align


def _headline_alignment(align: dict[str, float]) -> dict[str, float]:
    """The best map's exact and +-1 alignment (a Transformer has one map per layer)."""
    exact = [v for k, v in align.items() if not k.endswith("_pm1")]
    near = [v for k, v in align.items() if k.endswith("_pm1")]
    return {"test/attn_align": max(exact), "test/attn_align_pm1": max(near)}


# ----------------------------------------------------------------------------- pictures
def position_figure(acc: torch.Tensor, task: str, title: str):
    """Token accuracy at each output position; for copy/reverse also by input position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = list(range(len(acc)))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(pos, acc.tolist(), marker="o", ms=3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("output position t")
    if task == "reverse":
        ax.set_xlabel("output position t  (copied from input position L-1-t)")
        mirror = lambda p: len(acc) - 1 - p
        top = ax.secondary_xaxis("top", functions=(mirror, mirror))
        top.set_xlabel("input position")
    ax.set_ylabel("token accuracy (greedy)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap_figure(
    maps: dict[str, torch.Tensor],
    x: torch.Tensor,
    pred: torch.Tensor,
    y: torch.Tensor,
    n: int,
    pad: int,
    task: str,
    title: str,
):
    """One column per example, one row per attention map: rows = outputs, cols = inputs.

    A dashed line marks where each output token comes from (copy: the diagonal,
    reverse: the anti-diagonal), so an alignment off by a column is visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    fig, axes = plt.subplots(len(names), n, figsize=(3.2 * n, 3.0 * len(names)), squeeze=False)
    for j in range(n):
        s = int((x[j] != pad).sum())
        t = int((y[j] != pad).sum())
        for i, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(
                maps[name][j, :t, :s].float().cpu().numpy(),
                cmap="viridis",
                vmin=0,
                vmax=1,
                aspect="auto",
                interpolation="nearest",
            )
            if task in ("copy", "reverse"):
                ends = [s - 1, 0] if task == "reverse" else [0, s - 1]
                ax.plot(ends, [0, t - 1], color="white", lw=0.8, ls="--", alpha=0.7)
            ax.set_xlabel("input position")
            ax.set_ylabel("output position")
            ok = bool((pred[j, :t] == y[j, :t]).all())
            ax.set_title(f"example {j} ({'right' if ok else 'wrong'}) — {name}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the run
def check(ctx) -> None:
    from hydra.utils import get_class

    target = str(ctx.cfg.model.get("_target_", ""))
    try:
        ok = issubclass(get_class(target), Seq2SeqModel)
    except Exception:
        ok = False
    if not ok:
        raise ConfigError(
            f"technique=attention needs a sequence model: model=seq2seq|"
            f"seq2seq_attention|transformer (got model._target_={target})"
        )


def _describe(model: Seq2SeqModel) -> str:
    if not isinstance(model, Seq2Seq):
        return type(model).__name__
    encoder = "bidirectional GRU" if model.bidirectional else "GRU"
    return f"{encoder} seq2seq" + (f" + {model.score} attention" if model.attention else "")


def evaluate_model(model: Seq2SeqModel, data: DataSplits, cfg) -> dict[str, float]:
    """pdl-eval: greedy-decoding metrics of a saved model on the test split."""
    loader = TensorLoader(*data.test, batch_size=int(cfg.trainer.eval_batch_size))
    model.eval()
    scores = decode_scores(model, loader)
    metrics = {f"test/{k}": v for k, v in scores.summary().items()}
    if model.has_attention:
        pred = torch.cat(scores.preds)
        _, align = attention_alignment(model, data.test[0], pred, data.info.extra["task"])
        metrics.update(_headline_alignment(align))
    return metrics


TECHNIQUES.add(
    "attention",
    Technique("attention", run=run, needs=NEEDS, headline=HEADLINE, evaluate_model=evaluate_model),
)
