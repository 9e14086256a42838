"""pdl-run's errors: bad input of every kind is one line on stderr and a non-zero exit, before
any run starts; the full traceback on request."""

from __future__ import annotations

import pytest

from helpers import ENV, one_line_error, pdl_run

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------- bad input
BAD_VALUES = [
    (["model=nosuch"], "available options in 'model'"),
    (["trainer.nosuch=1"], "trainer.nosuch"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["technique=prune", "prune.ratio=1.5"], "prune.ratio"),
    (["technique=adv", "adv.epsilon=-0.1"], "adv.epsilon"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["augmentation.saturation=0.5"], "1-channel"),
    (["dataset=mnist"], "dataset.download=true"),
    (["trainer.resume=/no/such/run"], "does not exist"),
    (["hydra.run.dir=/proc/not_writable"], "hydra.run.dir"),
]


@pytest.mark.parametrize("args,expected", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, expected):
    line = one_line_error(pdl_run(args, tmp_path, timeout=120))
    assert expected in line
    assert not list(tmp_path.rglob("metrics.json"))


def test_full_traceback_on_request(tmp_path):
    p = pdl_run(["trainer.batch_size=0"], tmp_path, env={**ENV, "HYDRA_FULL_ERROR": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    for args in (["trainer.max_epochs=abc"], ["model=nosuch"], ["trainer.batch_size=0"]):
        p = pdl_run(args, tmp_path, timeout=120)
        assert p.returncode != 0, args
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("pdl-run: error:"), p.stderr
        assert args[0].split("=")[0] in lines[0]
        assert not (tmp_path / "outputs" / "runs").exists() or not list(
            (tmp_path / "outputs" / "runs").rglob("metrics.json")
        )


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size"),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma"),
        (["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max"),
        (["optimizer.lr=-0.1"], "optimizer.lr"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum"),
        (["+optimizer.betas=[0.9,1.5]"], "optimizer.betas"),
    ],
)
def test_pdl_run_refuses_a_bad_optimizer_or_scheduler_value_in_one_line(tmp_path, overrides, key):
    """What a user types: exit 1, one line on stderr naming the key and what is allowed."""
    out = pdl_run([*overrides, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pdl-run: error: {key}="), out.stderr
    assert "expected" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
