"""The one figure a student looks at for a claim, with error bars over the seeds.

The preset's `claim.figure` says what to draw (pdl_experiments/sweeps/claims.py):

* `kind: sweep` (the default): `y` (a metric) against `x` (a swept key), one line per value
  of `series`, one panel per value of `panels`; `where` keeps the jobs of one setting.
  `y: [m1, m2, ...]` draws one line per metric instead of per `series` value (e.g. accuracy
  before pruning, right after it and after fine-tuning, per setting).
* `kind: curve`: `y` is a TensorBoard scalar logged every epoch (val/fid, val/robust_acc),
  drawn against the epoch from each job's event file.
* `kind: profile`: `y` is a metric prefix (`test/token_acc_at/`): one point per suffix (a
  position, a search epoch), e.g. accuracy by position in the input.

`log_x`, `log_y` put an axis on a log scale; `lines: {label: y}` draws reference lines.

Every point is the mean over the seeds of the setting with its 95 % Student-t interval; a
diverged job counts as the claim's `chance`, as in the verdict. Off-screen (Agg), 110 dpi,
sized for a browser and the README.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .claims import matches, norm, value_of
from .stats import interval


def draw(claim: dict, rows: list[dict], path: Path, title: str = "") -> Path | None:
    """Write the claim's figure to `path`; None when it names nothing the sweep has."""
    spec = dict(claim.get("figure") or {})
    if not spec.get("y") or not rows:
        return None
    from ..figures import pyplot

    chance = {str(k): float(v) for k, v in (claim.get("chance") or {}).items()}
    rows = [r for r in rows if matches(r, dict(spec.get("where") or {}))]
    panels_key = spec.get("panels")
    panels = _values(rows, panels_key) if panels_key else [None]
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels) + 0.8, 3.8), squeeze=False, sharey=True
    )
    drawn = 0
    for ax, panel in zip(axes[0], panels, strict=True):
        members = [r for r in rows if panel is None or norm(r["overrides"].get(panels_key)) == norm(panel)]
        drawn += _panel(ax, spec, members, chance)
        if panel is not None:
            ax.set_title(f"{panels_key}={panel}", fontsize=10)
    if not drawn:
        plt.close(fig)
        return None
    axes[0][0].set_ylabel(spec.get("ylabel") or f"{', '.join(_metrics(spec))} (mean ± 95 % CI)")
    if spec.get("series") or len(_metrics(spec)) > 1:
        axes[0][-1].legend(fontsize=8, title=spec.get("series"), title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _panel(ax: Any, spec: dict, rows: list[dict], chance: dict[str, float]) -> int:
    """One panel's lines; the number of points drawn."""
    series_key = spec.get("series")
    kind = spec.get("kind", "sweep")
    xs_seen = _values(rows, spec.get("x")) if kind == "sweep" else []
    categories = xs_seen if any(_number(v) is None for v in xs_seen) else None  # e.g. a method
    drawn = 0
    metrics = _metrics(spec)
    if len(metrics) > 1:  # y: [a, b, ...]: one line per metric, every job in each
        series: list[Any] = metrics
    else:
        series = _values(rows, series_key) if series_key else [None]
    for k, value in enumerate(series):
        if len(metrics) > 1:
            members, y = rows, str(value)
        else:
            members = [
                r for r in rows if value is None or norm(r["overrides"].get(series_key)) == norm(value)
            ]
            y = metrics[0]
        points = _points(kind, {**spec, "y": y}, members, chance, categories)
        if not points:
            continue
        xs = sorted(points)
        stats = [interval(points[x]) for x in xs]
        means = [s.mean for s in stats]
        halves = [0.0 if math.isnan(s.half) else s.half for s in stats]  # one seed: no bar
        label = f"{value}" if value is not None else None
        if kind == "curve":
            (line,) = ax.plot(xs, means, label=label)
            lo = [m - h for m, h in zip(means, halves, strict=True)]
            hi = [m + h for m, h in zip(means, halves, strict=True)]
            ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
        elif categories:  # side by side at each category, not joined: no order between them
            shift = 0.12 * (k - (len(series) - 1) / 2)
            ax.errorbar(
                [x + shift for x in xs],
                means,
                yerr=halves,
                marker="o",
                linestyle="none",
                capsize=3,
                label=label,
            )
        else:
            ax.errorbar(xs, means, yerr=halves, marker="o", capsize=3, label=label)
        drawn += len(xs)
    if spec.get("log_x"):
        ax.set_xscale("log")
    if spec.get("log_y"):
        ax.set_yscale("log")
    if categories:
        many = len(categories) > 4  # long names side by side: slanted
        ax.set_xticks(
            range(len(categories)),
            categories,
            fontsize=8,
            rotation=30 if many else 0,
            ha="right" if many else "center",
        )
    ax.set_xlabel(spec.get("xlabel") or ("epoch" if kind == "curve" else spec.get("x", "position")))
    for key, level in (spec.get("lines") or {}).items():  # reference lines: {label: y}
        ax.axhline(float(level), color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            str(key), (0.01, float(level)), xycoords=("axes fraction", "data"), fontsize=7, color="grey"
        )
    ax.grid(alpha=0.3)
    return drawn


def _metrics(spec: dict) -> list[str]:
    """`y` as a list of metric names (one, or several drawn side by side)."""
    y = spec["y"]
    return [str(m) for m in y] if isinstance(y, list | tuple) else [str(y)]


def _points(
    kind: str, spec: dict, rows: list[dict], chance: dict[str, float], categories: list[str] | None
) -> dict[float, list[float]]:
    """x -> the seeds' values at x (a category's x is its position in `categories`)."""
    out: dict[float, list[float]] = {}
    y = str(spec["y"])
    for r in rows:
        if kind == "curve":
            pairs = _curve(r, y)
        elif kind == "profile":
            pairs = [
                (x, float(v))
                for k, v in r["metrics"].items()
                if k.startswith(y) and (x := _number(k[len(y) :])) is not None
            ]
        else:
            raw = r["overrides"].get(spec.get("x"))
            x = float(categories.index(raw)) if categories and raw in categories else _number(raw)
            v = value_of(r, y, chance)
            pairs = [] if x is None or v is None else [(x, v)]
        for x, v in pairs:
            out.setdefault(x, []).append(v)
    return out


def _curve(row: dict, tag: str) -> list[tuple[float, float]]:
    """A scalar's values from a job's event file, against the epoch (1, 2, ...)."""
    if not row["status"].startswith("ok"):
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(row["run"]), size_guidance={"scalars": 0}).Reload()
    if tag not in acc.Tags().get("scalars", []):
        return []
    return [(float(i + 1), float(e.value)) for i, e in enumerate(acc.Scalars(tag))]


def _values(rows: list[dict], key: str | None) -> list[str]:
    seen: list[str] = []
    for r in rows:
        v = r["overrides"].get(key) if key else None
        if v is not None and v not in seen:
            seen.append(v)
    if all(_number(v) is not None for v in seen):
        return sorted(seen, key=lambda v: _number(v) or 0.0)
    return seen  # categories (a method, a model): in the sweep's own order


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
