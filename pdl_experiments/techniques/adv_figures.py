"""technique=adv's pictures for TensorBoard: accuracy against eps per attack, the attacks'
success against eps, clean and attacked test images with their predictions."""

from __future__ import annotations

from typing import Any

from .attacks import ATTACKS, predict


def log_figures(ctx, wb, baseline, success, eps_list, examples: Any, target) -> None:
    """The figures of a run (rank 0); `examples`: (rows of (label, images), labels) or None."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    # Accuracy vs eps also as scalars, with eps (x1000) as the step: TensorBoard's own
    # interactive curves, next to the figure.
    for name in ATTACKS:
        for eps in eps_list:
            ctx.logger.scalars(
                {f"adv/acc_vs_eps_x1000/{name}": wb[f"acc/{name}@{eps:g}"]}, int(round(eps * 1000))
            )
    ctx.logger.figure("adv/acc_vs_eps", _curves_figure(plt, wb, baseline, eps_list, ctx.cfg.adv.train))
    if success is not None:
        ctx.logger.figure(
            "adv/success_vs_eps", _success_figure(plt, success, eps_list, str(ctx.cfg.adv.attack))
        )
    if examples is not None:
        ctx.logger.figure("adv/examples", _examples_figure(plt, ctx, target, *examples))


def _curves_figure(plt, wb, baseline, eps_list, adv_trained: bool):
    fig, ax = plt.subplots(figsize=(6, 4))
    label = "adv. trained" if adv_trained else "standard"
    for i, name in enumerate(ATTACKS):
        ax.plot(
            eps_list,
            [wb[f"acc/{name}@{e:g}"] for e in eps_list],
            marker="o",
            color=f"C{i}",
            label=f"{name} ({label})",
        )
        if baseline is not None:
            ax.plot(
                eps_list,
                [baseline[f"acc/{name}@{e:g}"] for e in eps_list],
                marker="x",
                ls="--",
                color=f"C{i}",
                label=f"{name} (standard)",
            )
    ax.set_xlabel("epsilon (pixel units, images in [0, 1])")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _success_figure(plt, success, eps_list, attack: str):
    eps = [e for e in eps_list if e > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("whitebox", "o"), ("transfer", "s")):
        ax.plot(
            eps,
            [success[f"adv/{kind}_success@{e:g}"] for e in eps],
            marker=marker,
            label=f"{kind} ({attack})",
        )
    ax.set_xlabel("epsilon")
    ax.set_ylabel("attack success (correct -> wrong)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _examples_figure(plt, ctx, target, rows, y):
    """Rows: clean, then each attack at adv.epsilon; titles: prediction (red when wrong)."""
    names = ctx.data.info.class_names or [str(i) for i in range(ctx.data.info.num_classes)]
    fig, axes = plt.subplots(len(rows), len(y), figsize=(1.3 * len(y), 1.5 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        preds = predict(target, images)
        for c in range(len(y)):
            ax = axes[r][c]
            img = images[c].detach().float().cpu().permute(1, 2, 0).clamp(0, 1)  # (H, W, C)
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ok = bool(preds[c] == y[c])
            ax.set_title(names[int(preds[c])], color="green" if ok else "red", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(
        "prediction above each image (red: wrong); true labels: " + " ".join(names[int(t)] for t in y),
        fontsize=9,
    )
    fig.tight_layout()
    return fig
