"""Fixtures only; the helpers they use live in helpers.py. The session-scoped runs below are
shared by the test modules of more than one folder (each is made once per pytest process,
on first use)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test module (or helpers.ENV) is imported.
os.environ.setdefault("PDL_DATA_ROOT", str(Path(__file__).parent / "_no_data_here"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n 2` (the README's test command) each worker gets one of the two
    # cores: one torch thread here and in every pdl-run the tests start.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def engines_lock(request):
    """The local engines (the SLURM cluster, PostgreSQL) are shared by both pytest workers:
    a test that uses one (its fixture) holds a shared lock on them, a test marked `disrupts`
    (PostgreSQL restarted, the node set DOWN: e2e/test_faults_engines.py) the exclusive one,
    so that no other test's jobs or study are under it when it strikes."""
    disrupts = request.node.get_closest_marker("disrupts") is not None
    if not disrupts and not {"slurm_cluster", "postgres_url"} & set(request.fixturenames):
        yield
        return
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "pdl-tests-engines.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if disrupts else fcntl.LOCK_SH)
        yield


@pytest.fixture(scope="session", autouse=True)
def registries():
    """The techniques registered, as the CLI does before a run or pdl-eval: tests that read a
    run back in-process (loading.evaluate_run) find its technique without running one first."""
    import pdl_experiments.techniques  # noqa: F401


@pytest.fixture
def small_run(tmp_path):
    from helpers import run_small

    def _run(overrides=None, name="run"):
        return run_small(tmp_path, overrides, name)

    return _run


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The default run (technique=bn, the cnn on the digits), 4 epochs with augmentation:
    (metrics, run_dir). Read by run/test_outputs.py, training/test_checkpoint.py,
    training/test_logger.py and loading/test_runs.py."""
    from helpers import run_small

    tmp = tmp_path_factory.mktemp("default")
    return run_small(tmp, ["trainer.max_epochs=4", "augmentation=light"])


@pytest.fixture(scope="session")
def honest(tmp_path_factory):
    """A finished run to copy into hostile ones (loading/test_safety.py, e2e/test_safety.py)."""
    from helpers import run_small

    tmp = tmp_path_factory.mktemp("honest")
    metrics, run_dir = run_small(tmp, ["trainer.max_epochs=1", "bn.diagnostics=false", "dataset.subset=300"])
    return metrics, run_dir


@pytest.fixture(scope="session")
def standard(tmp_path_factory):
    """A standard CNN trained for a few epochs on digits, attacked by the real run
    (techniques/test_adv.py, techniques/test_attacks.py): (metrics, run_dir, model, x, y)."""
    from pdl_experiments import load_run

    from helpers import run_small

    tmp = tmp_path_factory.mktemp("adv_standard")
    fast = ["technique=adv", "trainer.num_threads=1", "trainer.checkpoint_interval_s=0"]
    metrics, run_dir = run_small(tmp, fast + ["trainer.max_epochs=6", "adv.eval_eps=[0,0.1,0.2]"])
    loaded = load_run(run_dir)
    x, y = loaded.data.test
    return metrics, run_dir, loaded.model, x[:128], y[:128]


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node SLURM cluster of scripts/slurm_local.sh, started if it is not running."""
    from helpers import start_local

    start_local("slurm_local.sh")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The SQLAlchemy URL of scripts/postgres_local.sh's server, started if it is not running."""
    from helpers import start_local

    return start_local("postgres_local.sh").strip().splitlines()[-1]
