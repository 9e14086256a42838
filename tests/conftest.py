"""Fixtures only; the helpers they use live in helpers.py."""

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


@pytest.fixture
def small_run(tmp_path):
    from helpers import run_small

    def _run(overrides=None, name="run"):
        return run_small(tmp_path, overrides, name)

    return _run


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
