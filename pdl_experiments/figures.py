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


def alpha_figure(weights: Any, ops: list[str], edge_labels: list[str], genotype: Any, epoch: int):
    """DARTS: heatmap of softmax(alpha) `weights` (E, O), a row per edge, a column per op; the
    ops the derived `genotype` keeps boxed."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .models.darts import edge_inputs

    fig = Figure(figsize=(1.6 + 1.0 * len(ops), 1.0 + 0.42 * len(weights)))
    ax = fig.add_subplot()
    im = ax.imshow(weights, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(ops)), ops, rotation=35, ha="right")
    ax.set_yticks(range(len(weights)), edge_labels)
    for e in range(weights.shape[0]):
        for o in range(weights.shape[1]):
            ax.text(
                o,
                e,
                f"{weights[e, o]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if weights[e, o] < 0.6 * weights.max() else "black",
            )
    edge_of = {pair: k for k, pair in enumerate(edge_inputs(len(genotype)))}
    for j, node in enumerate(genotype):
        for op, i in node:
            ax.add_patch(
                Rectangle(
                    (ops.index(op) - 0.5, edge_of[(2 + j, i)] - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="red",
                    linewidth=2,
                )
            )
    ax.set_title(f"softmax(alpha) per edge, epoch {epoch} (red: derived genotype)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig
