"""A real preset sweep states its claim: with a failed job, the claim is incomplete, named;
scripts/make_report.py turns real sweeps into the results page's tables and the README's row."""

from __future__ import annotations

import re
import subprocess

import pytest

pytestmark = pytest.mark.e2e


def test_a_real_preset_sweep_with_a_failed_job_reports_its_claim_incomplete(tmp_path):
    """Real runs: one setting's learning rate is refused, so its jobs fail; the claim cannot hold."""
    from helpers import pdl_run

    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(
        "# @package _global_\n"
        "trainer: {max_epochs: 1}\n"
        "dataset: {subset: 100}\n"
        "claim:\n"
        "  says: a larger rate is better\n"
        "  compare: [{metric: test/acc, better: {optimizer.lr: 0.01}, than: {optimizer.lr: -1}}]\n"
        "  figure: {x: optimizer.lr, y: test/acc}\n"
        "hydra: {sweeper: {params: {optimizer.lr: '0.01,-1', seed: '0,1'}}}\n"
    )
    out = pdl_run(
        [
            "-m",
            "--config-dir",
            str(tmp_path / "conf"),
            "experiment=tiny",
            "trainer.progress=none",
            "trainer.num_threads=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 1  # the sweep had failed jobs
    assert "verdict: incomplete on digits" in out.stdout, out.stdout[-2000:]
    text = (tmp_path / "sweep" / "claim.md").read_text()
    assert "**tiny — incomplete on digits, 0 of 1 comparisons judged, seeds 0, 1**" in text
    assert "| incomplete: " in text and "optimizer.lr=-1" in text


TINY = """# @package _global_
trainer: {max_epochs: 1}
dataset: {subset: 100}
claim:
  short: a tiny claim
  says: a larger rate is better, and the smaller one stays under 99 %
  compare:
    - label: test acc, 0.01 − 0.001
      metric: test/acc
      better: {optimizer.lr: 0.01}
      than: {optimizer.lr: 0.001}
    - label: the small rate stays low
      metric: test/acc
      terms: [[1, {optimizer.lr: 0.001}]]
      below: 0.99
  figure: {x: optimizer.lr, y: test/acc}
hydra: {sweeper: {params: {optimizer.lr: '0.01,0.001', seed: '0,1'}}}
"""


def test_the_report_writes_each_real_sweep_as_a_table_under_its_own_dataset(tmp_path):
    """Two real sweeps of one preset, on the bundled digits and on real MNIST digits, stand in
    for bn_ablation and bn_ablation_mnist5k: REPORT.md and docs/results.md give each a header
    line naming its own dataset and one table (points, per cent, a true minus sign), the
    figures land beside the docs page, and the README's row links both verdicts there."""
    from helpers import PY, REPO, pdl_run

    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(TINY)
    root = tmp_path / "reproduce"
    for name, extra in (("bn_ablation", []), ("bn_ablation_mnist5k", ["dataset=mnist5k"])):
        out = pdl_run(
            ["-m", "--config-dir", str(tmp_path / "conf"), "experiment=tiny", *extra, "trainer.progress=none"]
            + ["trainer.num_threads=1", f"hydra.sweep.dir={root / name}"],
            cwd=tmp_path,
            timeout=900,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- claims:start -->\nold\n<!-- claims:end -->\n\nafter\n")
    docs = tmp_path / "docs" / "results.md"
    cmd = [PY, str(REPO / "scripts" / "make_report.py"), str(root), str(tmp_path / "out" / "REPORT.md")]
    done = subprocess.run(
        [*cmd, "--docs", str(docs), "--readme", str(readme)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for page in (tmp_path / "out" / "REPORT.md", docs):
        text = page.read_text()
        for name, data in (("bn_ablation", "digits"), ("bn_ablation_mnist5k", "mnist5k")):
            header = rf"\*\*{name} — (holds|does not hold) on {data}, [0-2] of 2 comparisons( hold)?, seeds 0, 1\*\*"
            assert re.search(header, text), text[:3000]
        rows = [ln for ln in text.splitlines() if ln.startswith("| test acc, 0.01 − 0.001 |")]
        assert len(rows) == 2 and all(
            re.search(r"\| [+−]\d+\.\d \[[+−]\d+\.\d, [+−]\d+\.\d\] points \| > 0 points \|", r) for r in rows
        )
        rows = [ln for ln in text.splitlines() if ln.startswith("| the small rate stays low |")]
        assert len(rows) == 2 and all(
            re.search(r"\| \d+\.\d \[−?\d+\.\d, \d+\.\d\] % \| < 99 % \|", r) for r in rows
        )
        assert not re.search(r"\[-|, -\d", text)  # no hyphen for a minus in a measured cell
        assert "## attention_length" in text and "`pdl-run -m experiment=attention_length`: not run." in text
    assert "](figures/bn_ablation.png)" in docs.read_text()
    assert (docs.parent / "figures" / "bn_ablation_mnist5k.png").is_file()
    text = readme.read_text()
    assert text.startswith("# x\n\n<!-- claims:start -->\n| technique |") and text.endswith(
        "<!-- claims:end -->\n\nafter\n"
    )
    (row,) = [ln for ln in text.splitlines() if ln.startswith("| bn | `bn_ablation` |")]
    assert "| a tiny claim |" in row
    assert "](docs/results.md#bn_ablation)" in row and "](docs/results.md#bn_ablation_mnist5k)" in row
    assert "| attention | `attention_length` | attention keeps" in text  # not run: its preset's words
