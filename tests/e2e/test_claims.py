"""A real preset sweep states its claim: with a failed job, the claim is incomplete, named."""

from __future__ import annotations

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
    assert "verdict: incomplete" in out.stdout, out.stdout[-2000:]
    text = (tmp_path / "sweep" / "claim.md").read_text()
    assert "**incomplete**" in text and "optimizer.lr=-1" in text
