"""Shared fixtures: compose the real configs (as pdl-run would) and run them small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PDL_DATA_ROOT", str(Path(__file__).parent / "_no_data_here"))

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str] | None = None):
    """The config `pdl-run <overrides>` would run, without Hydra's runtime section."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from pdl_experiments.config import typed

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        return typed(hydra_compose(config_name="config", overrides=list(overrides or [])))


def run_small(tmp_path: Path, overrides: list[str] | None = None, name: str = "run"):
    """Run an experiment in-process into tmp_path/name; returns (metrics, run_dir)."""
    from omegaconf import OmegaConf

    from pdl_experiments.run import run

    cfg = compose(["trainer.progress=none", *(overrides or [])])
    run_dir = tmp_path / name
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    # load_run and pdl-eval read the composed config from .hydra/, as in a real run.
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run(cfg, run_dir), run_dir


@pytest.fixture
def compose_cfg():
    return compose


@pytest.fixture
def small_run(tmp_path):
    def _run(overrides=None, name="run"):
        return run_small(tmp_path, overrides, name)

    return _run
