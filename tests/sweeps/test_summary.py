"""sweeps/summary.py: the summary of a sweep or of single runs (pdl-report), its log-scale
rule, a failed job's message printed as text."""

from __future__ import annotations

import json

FAST = ["trainer.max_epochs=1", "bn.diagnostics=false"]


def test_pdl_report_over_single_runs(tmp_path):
    from pdl_experiments.cli import report_main

    from helpers import run_small

    for lr in (0.002, 0.01):
        run_small(tmp_path / "runs", [f"optimizer.lr={lr}", *FAST], name=f"lr{lr}")
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    csv = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert len(csv) == 3 and "test/acc" in csv[0]


# The plot of a sweep over a numeric axis spanning 10x or more is drawn on a log scale.
def test_log_scale_rule():
    from pdl_experiments.sweeps.summary import log_scale

    assert log_scale([0.001, 0.01, 0.1])
    assert log_scale([1, 10])
    assert not log_scale([1, 2, 5])
    assert not log_scale([0, 1, 100])  # 0 has no place on a log axis
    assert not log_scale([])


def test_summary_prints_error_messages_with_brackets_as_text(tmp_path):
    """A failed job's message is data: "[/x]" in it is not rich markup (it once broke the summary)."""
    import io

    from rich.console import Console

    from pdl_experiments.sweeps.summary import report

    error = "model.channels=[0] must be positive [/bold] (allowed: [1, ...])"
    for i, status in enumerate([{"status": "failed", "error": error}, {"status": "done"}]):
        job = tmp_path / f"{i}_model.channels=[{i}]"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.channels=[{i}]\n")
        (job / "status.json").write_text(json.dumps(status))
        if i:
            (job / "metrics.json").write_text(json.dumps({"val/acc": 0.5, "test/acc": 0.5}))
    out = io.StringIO()
    rows = report([tmp_path], console=Console(file=out, width=300))
    assert [r["status"] for r in rows] == ["failed: " + error, "ok"]
    printed = out.getvalue()
    assert "[/bold]" in printed and "[0]" in printed
