"""Fixtures only; the helpers they use live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test module (or helpers.ENV) is imported.
os.environ.setdefault("PDL_DATA_ROOT", str(Path(__file__).parent / "_no_data_here"))


@pytest.fixture
def small_run(tmp_path):
    from helpers import run_small

    def _run(overrides=None, name="run"):
        return run_small(tmp_path, overrides, name)

    return _run
