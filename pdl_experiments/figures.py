"""Matplotlib figures shared by techniques and reports (drawn off-screen, Agg)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures for files and TensorBoard, no window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sparsity_figure(m: dict):
    """Bar per conv/linear layer: the share of its original weights zero or removed."""
    plt = pyplot()
    names = [k[len("prune/sparsity/") :] for k in m if k.startswith("prune/sparsity/")]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(names) + 1), 3.2))
    ax.bar(range(len(names)), [m[f"prune/sparsity/{n}"] for n in names], color="tab:red")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of weights zero / removed")
    ax.set_title(f"sparsity per layer (overall {m['prune/sparsity']:.3f})")
    fig.tight_layout()
    return fig


def block_scores_figure(
    scores: dict,
    chosen: list,
    random_pick: list,
    val_acc_all: float | None,
    ylabel: str = "val accuracy without the block",
):
    """The criterion's score without each residual block; removed and random ones coloured."""
    plt = pyplot()
    idx = sorted(scores, key=int)
    colors = [
        "tab:green" if int(i) in chosen else "tab:orange" if int(i) in random_pick else "tab:gray"
        for i in idx
    ]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar([f"block {i}" for i in idx], [scores[i] for i in idx], color=colors)
    if val_acc_all is not None:  # an accuracy: against the full model's, on [.., 1]
        ax.axhline(val_acc_all, color="k", lw=1, ls="--", label="all blocks")
        ax.set_ylim(max(0.0, min(scores.values()) - 0.05), 1.0)
        ax.legend(fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title("green: removed (criterion), orange: random baseline", fontsize=8)
    fig.tight_layout()
    return fig
