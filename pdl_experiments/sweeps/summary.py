"""Sweep summaries: one row per job (overrides, status, final metrics) as a rich table,
summary.csv, summary.md and, when a swept axis is numeric, a PNG plot.

Called by Hydra at the end of every multirun (SweepSummaryCallback) and by `pdl-report`.
Imports nothing heavy at module level (Hydra instantiates the callback at startup).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ..loading.safety import load_yaml_config, read_bounded
from . import claims, seeds
from .claim_figure import draw
from .stop import stop_requested

log = logging.getLogger("pdl_experiments")


class SweepFailed(SystemExit):
    """Some jobs of a finished sweep failed (their reasons are in the summary).

    A SystemExit, because Hydra turns an Exception raised in a callback into a warning: this
    one passes through, and pdl-run prints it as its one-line error and exits 1.
    """


def find_runs(dirs: Iterable[str | Path]) -> list[Path]:
    """Run directories (those with .hydra/config.yaml) at or below each of `dirs`."""
    runs: list[Path] = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"no such directory: {d}")
        if (d / ".hydra" / "config.yaml").is_file():
            runs.append(d)
        else:
            runs.extend(sorted(p.parent.parent for p in d.rglob(".hydra/config.yaml")))
    return sorted(set(runs), key=_job_sort_key)


def _job_sort_key(p: Path):
    head = p.name.split("_", 1)[0]
    return (str(p.parent), int(head) if head.isdigit() else 10**9, p.name)


def collect(runs: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        overrides = _read_overrides(r)
        status_path, metrics_path = r / "status.json", r / "metrics.json"
        status = json.loads(read_bounded(status_path)) if status_path.is_file() else {}
        metrics = json.loads(read_bounded(metrics_path)) if metrics_path.is_file() else {}
        if status.get("status") == "failed":
            state = "failed: " + status.get("error", "").splitlines()[0][:120]
        elif status.get("status") == "interrupted":
            # Not a failure: last.pt holds it; trainer.resume=auto continues it.
            state = f"interrupted ({status.get('phase')} epoch {status.get('epoch')})"
        elif status.get("status") == "pruned":
            # Not a failure: an Optuna trial its pruner stopped early (pdl_experiments/sweeps/hpo.py).
            state = f"pruned ({status.get('phase')} epoch {status.get('epoch')})"
        elif metrics:
            state = "ok"
        else:
            state = "incomplete"
        rows.append({"run": str(r), "overrides": overrides, "status": state, "metrics": metrics})
    return rows


def _read_overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    out = {}
    for o in OmegaConf.to_container(load_yaml_config(path)) or []:
        k, _, v = str(o).partition("=")
        if not k.startswith("hydra"):
            out[k] = v
    return out


def _metric_columns(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r["metrics"]:
            if k not in keys and (not k.startswith("train/") or k == "train/time_s"):
                keys.append(k)
    first = [k for k in ("val/acc", "test/acc") if k in keys]
    return first + sorted(k for k in keys if k not in first)


def report(
    dirs: Iterable[str | Path],
    out_dir: str | Path | None = None,
    metric: str | None = None,
    console: Any = None,
) -> list[dict]:
    dirs = list(dirs)
    runs = find_runs(dirs)
    if not runs:
        raise FileNotFoundError(
            f"no runs (directories with .hydra/config.yaml) under {', '.join(map(str, dirs))}"
        )
    rows = collect(runs)
    out = Path(out_dir or dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    axes = sorted({k for r in rows for k in r["overrides"]})
    metrics = _metric_columns(rows)
    header = ["job"] + axes + ["status"] + metrics

    def row(r: dict, fmt) -> list[str]:
        return (
            [Path(r["run"]).name.split("_", 1)[0]]
            + [r["overrides"].get(a, "") for a in axes]
            + [r["status"]]
            + [fmt(r["metrics"].get(m)) for m in metrics]
        )

    with open(out / "summary.csv", "w", newline="") as f:  # the data: every column, full precision
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(row(r, lambda v: "" if v is None else str(v)) for r in rows)
    table = [row(r, _fmt) for r in rows]
    # For reading, an override every job shares (experiment=..., trainer.progress=none) is
    # said once above the table instead of repeated in a column.
    # A one-job sweep's settings are all said once: it has no columns to compare.
    common = {
        a: rows[0]["overrides"].get(a, "")
        for a in axes
        if len({r["overrides"].get(a, "") for r in rows}) == 1
    }
    keep = [i for i, h in enumerate(header) if h not in common]
    header, table = [header[i] for i in keep], [[row[i] for i in keep] for row in table]
    varying = [a for a in axes if a not in common]
    note = "common to every job: " + ", ".join(f"{k}={v}" for k, v in common.items()) if common else ""
    md = [f"{note.replace('common', 'Common', 1)}", ""] if note else []
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    # The console gets the headline columns; summary.csv / summary.md keep all of them.
    shown = [i for i, h in enumerate(header) if i < len(varying) + 2 or h in _headline(metrics)]
    _print_table(
        [header[i] for i in shown],
        [[row[i] for i in shown] for row in table],
        console,
        title=f"sweep summary — {out}",
        caption=note,
    )
    seeds.write(rows, metrics, out, _headline(metrics), console)  # mean ± ci95 when seeds vary
    write_claim(rows, out, console)  # a preset's claim: claim.md, claim.png, its verdict
    plot_metric = metric or next(
        (m for m in ("test/acc", "test/token_acc", "gan/fid") if m in metrics),
        metrics[0] if metrics else None,
    )
    if plot_metric:
        _plot(rows, axes, plot_metric, out)
    if metric is None:  # the metrics a technique's sweep is about, each in a plot of its own
        for extra in ("adv/robust_acc/fgsm", "adv/robust_acc/pgd", "test/seq_acc", "gan/class_coverage"):
            if extra in metrics:
                _plot(rows, axes, extra, out)
    return rows


def write_claim(rows: list[dict], out: Path, console: Any = None) -> claims.Verdict | None:
    """claim.md and claim.png of a preset sweep (nothing for a sweep with no claim); the
    verdict, printed."""
    claim = claims.claim_of(rows)
    if claim is None:
        return None
    verdict = claims.judge(claim, rows)
    png = draw(claim, rows, out / "claim.png", title=str(claim.get("title", "")))
    name = claims.preset_of(rows) or out.name
    (out / "claim.md").write_text(
        "\n".join(claims.markdown(claim, verdict, png.name if png else None, name=name)) + "\n"
    )
    from rich.markup import escape

    from ..training.progress import console as default_console

    show = console or default_console()
    show.print(escape(f"claim: {claim.get('says', '')}".strip()), soft_wrap=True)
    show.print(escape("verdict: " + verdict.headline()), soft_wrap=True)
    for r in verdict.results:
        show.print(escape("  " + r.line()), soft_wrap=True)
    return verdict


def _headline(metrics: list[str], most: int = 8) -> list[str]:
    preferred = [m for m in metrics if m.count("/") <= 1 and not m.startswith(("val/loss", "test/loss"))]
    return (preferred or metrics)[:most]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_table(header, table, console, title, caption: str = "") -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..training.progress import console as default_console

    # Cells are data (error messages, override values): "[...]" in them is not rich markup.
    t = Table(title=escape(title), caption=escape(caption) if caption else None, header_style="bold")
    for h in header:
        t.add_column(escape(h), overflow="fold")
    for row in table:
        t.add_row(*(escape(str(c)) for c in row))
    (console or default_console()).print(t)  # off a terminal: room enough, no folded cells


def _as_float(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def _plot(rows: list[dict], axes: list[str], metric: str, out: Path) -> Path | None:
    """metric vs the first numeric swept axis, one line per combination of the others; the
    axis is logarithmic when its values span a factor of 10 or more (log_scale)."""
    numeric = [
        a
        for a in axes
        if a != "seed"  # seeds are not a setting: summary_seeds.csv and its plot average over them
        and all(_as_float(r["overrides"].get(a)) is not None for r in rows)
        and len({r["overrides"].get(a) for r in rows}) > 1
    ]
    if not numeric:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_axis = numeric[0]
    # Lines differ by the other swept axes; an axis with one value names no line.
    others = [a for a in axes if a != x_axis and len({r["overrides"].get(a) for r in rows}) > 1]
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if metric not in r["metrics"]:
            continue
        label = ", ".join(f"{a}={r['overrides'].get(a, '')}" for a in others) or metric
        lines.setdefault(label, []).append((float(r["overrides"][x_axis]), r["metrics"][metric]))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if log_scale([x for pts in lines.values() for x, _ in pts]):
        ax.set_xscale("log")  # optimizer.lr=0.001,0.01,0.1: evenly spaced, not two at one edge
    ax.set_xlabel(x_axis)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or others:
        ax.legend(fontsize=8)
    path = out / f"{metric.replace('/', '_')}_vs_{x_axis.replace('/', '_')}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def log_scale(values: list[float]) -> bool:
    """Whether an axis with these values reads better on a log scale: all > 0, spanning 10x."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


class SweepSummaryCallback(Callback):
    """Hydra callback: summarise every multirun when it ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = report([sweep_dir])
        except Exception as e:  # a summary must never turn a finished sweep into a crash
            log.error("could not summarise sweep %s: %s", sweep_dir, e)
            return
        failed = [r for r in rows if r["status"].startswith(("failed", "incomplete"))]
        if stop_requested(sweep_dir) is not None:
            return  # a stopped sweep exits 130 / 143 (sweep.SweepStopCallback), not as failed
        if failed:
            raise SweepFailed(f"{len(failed)} of {len(rows)} jobs failed (see {sweep_dir / 'summary.md'})")
