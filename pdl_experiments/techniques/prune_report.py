"""technique=prune's end-of-run report: what pruning cost and saved (metrics, table, figures)."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..data import as_float
from ..figures import block_scores_figure, sparsity_figure
from ..measure import count_flops, count_nonzero, count_params, cpu_latency_ms
from ..models.common import weight_layers
from ..models.sparse import effective_weight

log = logging.getLogger("pdl_experiments")

LATENCY_BATCH = 256


def describe(ctx, task) -> dict[str, float]:
    """Accuracy, size and cost of the task's model as it stands."""
    model = task.model
    x1 = as_float(ctx.data.test[0][:1])
    out = {
        "acc": ctx.evaluate(task, "test")["test/acc"],
        "val_acc": ctx.evaluate(task, "val")["val/acc"],
        "params": count_params(model),
        "nonzero": count_nonzero(model),
        "flops": count_flops(model, x1),
    }
    out["conv_nonzero"] = sum(
        int(effective_weight(m).count_nonzero()) for _, m in weight_layers(model) if isinstance(m, nn.Conv2d)
    )
    for name, m in weight_layers(model):
        out[f"layer/{name}"] = effective_weight(m).numel()
    return out


def report(
    ctx, model, before: dict, after: dict, rounds: list[dict], level_name: str, dense_model
) -> dict[str, float]:
    """metrics.json's prune/* keys from the dense model's record (`before`), the pruned
    model's (`after`) and each round's; `dense_model` (untrained is fine) times the dense
    architecture's latency."""
    after["ckpt_bytes"] = (ctx.run_dir / "checkpoints" / "best.pt").stat().st_size
    x = as_float(ctx.data.test[0][:LATENCY_BATCH])
    x = x.repeat(math.ceil(LATENCY_BATCH / len(x)), *([1] * (x.dim() - 1)))[:LATENCY_BATCH]  # (256, C, H, W)
    log.info(
        "measuring CPU latency at batch %d (%d repeats, %d threads)",
        LATENCY_BATCH,
        int(ctx.cfg.prune.latency_repeats),
        torch.get_num_threads(),
    )
    lat = cpu_latency_ms({"before": dense_model, "after": model}, x, int(ctx.cfg.prune.latency_repeats))

    m: dict[str, float] = {
        "prune/acc_before": before["acc"],
        "prune/acc_pruned": rounds[-1]["acc_pruned"],
        "prune/acc_finetuned": after["acc"],
        "prune/params_before": before["params"],
        "prune/params_after": after["params"],
        "prune/nonzero_before": before["nonzero"],
        "prune/nonzero_after": after["nonzero"],
        "prune/flops_before": before["flops"],
        "prune/flops_after": after["flops"],
        "prune/flops_share": after["flops"] / before["flops"],
        "prune/conv_params_share": after["conv_nonzero"] / max(before["conv_nonzero"], 1),
        "prune/latency_ms_before": lat["before"],
        "prune/latency_ms_after": lat["after"],
        "prune/latency_ratio": lat["after"] / lat["before"],
        "prune/ckpt_bytes_before": before["ckpt_bytes"],
        "prune/ckpt_bytes_after": after["ckpt_bytes"],
        "prune/ckpt_share": after["ckpt_bytes"] / before["ckpt_bytes"],
    }
    # Sparsity: the share of a layer's original weights that are zero or gone.
    kept_total = orig_total = 0
    live = {n: int(effective_weight(mod).count_nonzero()) for n, mod in weight_layers(model)}
    for key, numel in before.items():
        if key.startswith("layer/"):
            name = key[len("layer/") :]
            kept = live.get(name, 0)
            m[f"prune/sparsity/{name}"] = 1.0 - kept / numel
            kept_total, orig_total = kept_total + kept, orig_total + numel
    m["prune/sparsity"] = 1.0 - kept_total / max(orig_total, 1)
    removed = sorted({int(i) for r in rounds for i in r.get("chosen", [])})
    if level_name == "layer":
        m["prune/blocks_removed"] = len(removed)
        m["prune/acc_random_block"] = rounds[-1]["acc_random_block"]
        name = "fisher_without_block" if _discriminability(ctx) else "val_acc_without_block"
        for i, score in rounds[0]["val_acc_without"].items():
            m[f"prune/{name}/{i}"] = score
    if len(rounds) > 1:
        for k, r in enumerate(rounds, 1):
            m[f"prune/acc_pruned_round{k}"] = r["acc_pruned"]
            m[f"prune/acc_finetuned_round{k}"] = r["acc_finetuned"]
    _show(ctx, m, level_name, rounds, removed, before)
    return m


def _show(ctx, m: dict, level_name: str, rounds: list[dict], removed: list[int], before: dict) -> None:
    """The end-of-run comparison, as a rich table and as TensorBoard text and figures."""
    from rich.table import Table

    from ..training.progress import console

    rows = [
        ("test accuracy", "acc_before", "acc_finetuned", "{:.4f}"),
        ("parameters", "params_before", "params_after", "{:,.0f}"),
        ("non-zero parameters", "nonzero_before", "nonzero_after", "{:,.0f}"),
        ("FLOPs / image (2 x MACs)", "flops_before", "flops_after", "{:,.0f}"),
        (f"CPU latency, batch {LATENCY_BATCH} (ms)", "latency_ms_before", "latency_ms_after", "{:.2f}"),
        ("checkpoint bytes", "ckpt_bytes_before", "ckpt_bytes_after", "{:,.0f}"),
    ]
    table = Table(title=f"pruning ({level_name} level): dense vs pruned", header_style="bold")
    for col in ("", "before", "after fine-tuning", "after / before"):
        table.add_column(col, justify="right" if col else "left")
    md = ["| | before | after fine-tuning | after / before |", "|---|---|---|---|"]
    for label, b, a, fmt in rows:
        vb, va = m[f"prune/{b}"], m[f"prune/{a}"]
        cells = [fmt.format(vb), fmt.format(va), f"{va / vb:.3f}" if vb else "-"]
        table.add_row(label, *cells)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    extra = [
        f"test accuracy right after pruning: {m['prune/acc_pruned']:.4f}",
        f"sparsity (conv + linear weights): {m['prune/sparsity']:.4f}",
    ]
    if level_name == "layer":
        extra.append(
            f"blocks removed {removed}: test acc {m['prune/acc_pruned']:.4f} "
            f"(criterion) vs {m['prune/acc_random_block']:.4f} (random {rounds[-1]['random']}),"
            " both before fine-tuning"
        )
    console().print(table)
    for line in extra:
        log.info(line)
    if ctx.logger is None:
        return
    ctx.logger.text("prune/report", "\n".join(md + [""] + [f"* {e}" for e in extra]))
    ctx.logger.figure("prune/sparsity_per_layer", sparsity_figure(m))
    if level_name == "layer":
        first = rounds[0]
        ctx.logger.figure(
            "prune/block_scores",
            block_scores_figure(
                first["val_acc_without"],
                first["chosen"],
                first["random"],
                None if _discriminability(ctx) else before["val_acc"],
                "val Fisher ratio without the block"
                if _discriminability(ctx)
                else "val accuracy without the block",
            ),
        )


def _discriminability(ctx) -> bool:
    return str(ctx.cfg.prune.criterion) == "discriminability"
