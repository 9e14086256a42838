"""Claims with error bars: the jobs of a sweep that differ only by `seed`, summarised together.

When a sweep varies `seed` (`pdl-run -m seed=0,1,2 ...`, or runs gathered by `pdl-report`),
each setting of the other axes becomes one row of `summary_seeds.csv`: `n` (the finished
seeds) and, per metric, `<metric> mean`, `<metric> std` (sample standard deviation) and
`<metric> ci95` (half-width of the 95 % Student-t interval of the mean: sweeps/stats.py).
The same table goes into summary.md and, headline columns only, to the console;
`<metric>_vs_<axis>_seeds.png` draws the means with their intervals.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from .stats import interval


def seed_rows(rows: list[dict], metrics: list[str]) -> tuple[list[str], list[dict]]:
    """(the setting axes, one dict per setting: overrides, n, and mean/std/ci95 per metric)."""
    done = [r for r in rows if r["status"] == "ok"]
    if len({r["overrides"].get("seed") for r in done}) < 2:
        return [], []
    axes = sorted({k for r in done for k in r["overrides"]} - {"seed"})
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        groups.setdefault(tuple(r["overrides"].get(a, "") for a in axes), []).append(r)
    out = []
    for key, members in groups.items():
        stats: dict[str, Any] = {"overrides": dict(zip(axes, key, strict=True)), "n": len(members)}
        for m in metrics:
            values = [
                float(r["metrics"][m]) for r in members if isinstance(r["metrics"].get(m), (int, float))
            ]
            if len(values) == len(members):
                stats[m] = summarise(values)
        out.append(stats)
    return axes, out


def summarise(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std, ci95 half-width); std and ci95 are nan for a single value."""
    i = interval(values)
    return i.mean, i.std, i.half


def write(
    rows: list[dict], metrics: list[str], out: Path, headline: list[str], console: Any = None
) -> Path | None:
    """summary_seeds.csv (+ a summary.md section, a console table, a plot); None without seeds."""
    axes, settings = seed_rows(rows, metrics)
    if not settings:
        return None
    shown = [m for m in metrics if all(m in s for s in settings)]
    path = out / "summary_seeds.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*axes, "n", *[f"{m} {s}" for m in shown for s in ("mean", "std", "ci95")]])
        for s in settings:
            w.writerow([*(s["overrides"][a] for a in axes), s["n"], *[repr(v) for m in shown for v in s[m]]])
    varying = [a for a in axes if len({s["overrides"][a] for s in settings}) > 1]
    cells = lambda s, ms: [*(s["overrides"][a] for a in varying), str(s["n"]), *[_pm(s[m]) for m in ms]]
    md = [
        "",
        "## Over seeds (mean ± ci95, 95 % t-interval)",
        "",
        "| " + " | ".join([*varying, "n", *shown]) + " |",
        "|" + "---|" * (len(varying) + 1 + len(shown)),
    ]
    md += ["| " + " | ".join(cells(s, shown)) + " |" for s in settings]
    with open(out / "summary.md", "a") as f:
        f.write("\n".join(md) + "\n")
    top = ([m for m in shown if m in headline] or shown)[:4]
    from rich.markup import escape
    from rich.table import Table

    from ..training.progress import console as default_console

    table = Table(title=escape(f"over seeds — mean ± ci95 ({out})"), header_style="bold")
    for h in [*varying, "n", *top]:
        table.add_column(escape(h))
    for s in settings:
        table.add_row(*(escape(str(c)) for c in cells(s, top)))
    (console or default_console()).print(table)
    _plot(settings, varying, top[0] if top else None, out)
    return path


def _pm(stat: tuple[float, float, float]) -> str:
    mean, _, ci = stat
    return f"{mean:.4g}" if math.isnan(ci) else f"{mean:.4g} ± {ci:.2g}"


def _plot(settings: list[dict], axes: list[str], metric: str | None, out: Path) -> Path | None:
    """The metric's mean with its 95 % interval against the first numeric axis."""
    numeric = [a for a in axes if all(_number(s["overrides"][a]) is not None for s in settings)]
    if metric is None or not numeric:
        return None
    from ..figures import pyplot

    plt = pyplot()
    x_axis, others = numeric[0], [a for a in axes if a != numeric[0]]
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple, list[dict]] = {}
    for s in settings:
        lines.setdefault(tuple(s["overrides"][a] for a in others), []).append(s)
    for key, members in lines.items():
        members.sort(key=lambda s: _number(s["overrides"][x_axis]) or 0.0)
        xs = [_number(s["overrides"][x_axis]) for s in members]
        ax.errorbar(
            xs,
            [s[metric][0] for s in members],
            yerr=[0 if math.isnan(s[metric][2]) else s[metric][2] for s in members],
            marker="o",
            capsize=3,
            label=", ".join(f"{a}={v}" for a, v in zip(others, key, strict=True)) or None,
        )
    values = [x for x in (_number(s["overrides"][x_axis]) for s in settings) if x is not None]
    if values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(x_axis)
    ax.set_ylabel(f"{metric} (mean ± 95 % CI over seeds)")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=8)
    path = out / f"{metric.replace('/', '_')}_vs_{x_axis.replace('/', '_')}_seeds.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
