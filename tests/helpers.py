"""Helpers shared by the test modules: compose the real configs (as pdl-run would), run them
small in-process, or run pdl-run in a subprocess; and the few pieces two test modules share
(hostile run directories, fake image folders, the checks of a dataset's splits).

Test modules import these with `from helpers import ...` (tests/ is on pytest's `pythonpath`,
pyproject.toml, so every folder under it can); no test module imports another or conftest.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pdl_experiments.data import DataSplits

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# Read when this module is first imported, after conftest has set PDL_DATA_ROOT's default.
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


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


def pdl_run(args, cwd, timeout=240, env=None):
    """`python -m pdl_experiments.cli <args>` in cwd; returns the CompletedProcess."""
    return subprocess.run(
        [PY, "-m", "pdl_experiments.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )


def interrupt_and_resume(
    tmp_path: Path, monkeypatch, overrides: list[str], stop_after
) -> tuple[dict, dict, dict]:
    """Run `overrides` in-process three times: uninterrupted ("clean"); stopped as by a SIGTERM
    right after the training step for which `stop_after(trainer)` is first true ("killed");
    resumed from that run's last.pt ("resumed"). Returns (clean metrics, the killed run's
    last.pt, resumed metrics)."""
    import signal

    import pytest
    import torch

    from pdl_experiments.training import Interrupted, Trainer

    clean, _ = run_small(tmp_path, overrides, name="clean")
    optimize = Trainer.optimize

    def optimize_then_stop(self, loss, name="default"):
        optimize(self, loss, name)
        if stop_after(self):
            self.state.stop_signal = signal.SIGTERM  # as the run's own handler records a signal

    monkeypatch.setattr(Trainer, "optimize", optimize_then_stop)
    with pytest.raises(Interrupted):
        run_small(tmp_path, overrides, name="killed")
    monkeypatch.undo()
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    resumed, _ = run_small(tmp_path, [*overrides, f"trainer.resume={tmp_path / 'killed'}"], name="resumed")
    return clean, last, resumed


def without_timings(metrics: dict) -> dict:
    """The metrics a resumed run must reproduce: all but times and rates."""
    return {k: v for k, v in metrics.items() if not any(w in k for w in ("time", "wall", "per_s"))}


@contextlib.contextmanager
def as_pdl_run(overrides: list[str], run_dir: Path | None = None):
    """The config `pdl-run <overrides>` runs, with Hydra's runtime config set meanwhile (so
    the choices made on the command line are known); `run_dir`, when given, is Hydra's
    runtime.output_dir (the fdr preset puts the GAN judge's cache in ${hydra:runtime.output_dir})."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg  # typed() leaves the hydra section out
    finally:
        HydraConfig.instance().cfg = None


def bad_values(ok) -> list:
    """Values `ok` rejects, from a list of the usual suspects."""
    found = []
    for v in (-1, 0, 1.5, 2, 181, 1e9, [], [0], [1, 2, 3]):
        try:
            if not ok(v):
                found.append(v)
        except (TypeError, ValueError):
            continue
    return found[:2]


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """The one line a failed pdl-run printed (asserted: non-zero exit, no traceback)."""
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("pdl-run: error:") and "Traceback" not in p.stderr
    return lines[0]


def written_since(root: Path, stamp: float) -> list[Path]:
    """Files under root modified after `stamp` (find ROOT -newer STAMP -type f)."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            with contextlib.suppress(OSError):
                if p.stat().st_mtime > stamp:
                    out.append(p)
    return out


# ------------------------------------------------- hostile run directories (loading/, e2e/)


class Payload:
    """Unpickling this creates `marker`: proof that code from the run directory ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile(tmp_path, honest_dir, edit):
    """A copy of an honest run directory whose config `edit(cfg, marker)` changed."""
    import yaml

    run_dir = tmp_path / "shared_run"
    shutil.copytree(honest_dir, run_dir)
    marker = tmp_path / "MARKER"
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    edit(cfg, marker, tmp_path)
    cfg_path.write_text(yaml.safe_dump(cfg))
    return run_dir, marker


def pickle_file(path, marker):
    """A pickle at `path` that creates `marker` when loaded."""
    with open(path, "wb") as f:
        pickle.dump(Payload(marker), f)
    return str(path)


def numpy_unpickles_the_dataset(cfg, marker, tmp):
    cfg["dataset"] = {
        "_target_": "numpy.load",
        "file": pickle_file(tmp / "data.npy", marker),
        "allow_pickle": True,
    }


def torch_load_as_the_model(cfg, marker, tmp):
    cfg["model"] = {"_target_": "torch.load", "f": pickle_file(tmp / "m.pt", marker), "weights_only": False}


def optimizer_that_is_not_one(cfg, marker, tmp):
    cfg["optimizer"] = {"_target_": "pickle.load", "file": pickle_file(tmp / "o.pkl", marker)}


def optimizer_lookalike(cfg, marker, tmp):
    cfg["optimizer"] = {"_target_": "torch.optim.swa_utils.get_ema_multi_avg_fn", "_partial_": True}


def scheduler_with_a_nested_payload(cfg, marker, tmp):
    cfg["scheduler"] = {
        "_target_": "torch.optim.lr_scheduler.LambdaLR",
        "_partial_": True,
        "lr_lambda": {"_target_": "pickle.load", "file": pickle_file(tmp / "s.pkl", marker)},
    }


def model_with_a_nested_payload(cfg, marker, tmp):
    cfg["model"]["channels"] = {
        "_target_": "torch.load",
        "f": pickle_file(tmp / "c.pt", marker),
        "weights_only": False,
    }


def undeclared_argument(cfg, marker, tmp):
    cfg["dataset"]["allow_pickle"] = True  # load_digits takes no such option


def positional_arguments(cfg, marker, tmp):
    cfg["model"]["_args_"] = [pickle_file(tmp / "a.pt", marker)]


def a_technique_that_is_not_one(cfg, marker, tmp):
    cfg["technique"] = "base"


# ------------------------------------------------- datasets (data/)
def check_splits(s: DataSplits, shape: tuple, n_train_total: int, n_test: int) -> None:
    """What every loader's splits must be (vision, image_folder, digits)."""
    import torch

    from pdl_experiments.data import as_float

    # The training split stays uint8 in memory (the loaders convert each batch); val and test
    # are float in [0, 1].
    assert s.train[0].dtype == torch.uint8
    for x, y in ((as_float(s.train[0]), s.train[1]), s.val, s.test):
        assert x.dtype == torch.float32 and y.dtype == torch.long
        assert tuple(x.shape[1:]) == shape and len(x) == len(y)
        if len(x):
            assert 0.0 <= x.min() and x.max() <= 1.0
    sizes = s.sizes()
    assert sizes["train"] + sizes["val"] == n_train_total
    assert sizes["test"] == n_test
    assert s.info.in_shape == shape
    assert len(s.info.mean) == len(s.info.std) == shape[0]
    assert len(s.info.class_names) == s.info.num_classes
    # every class present in the train split appears in val too (stratified)
    assert set(s.val[1].tolist()) == set(s.train[1].tolist())


def assert_same(a: DataSplits, b: DataSplits) -> None:
    import torch

    for k in ("train", "val", "test"):
        for ta, tb in zip(getattr(a, k), getattr(b, k), strict=True):
            assert torch.equal(ta, tb)


def write_folder(root, n_per_class: int = 20, size: int = 20) -> str:
    """Three classes (a, b, c) of `n_per_class` RGB images, `size` square, as an image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            img = (rng.random((size, size, 3)) * 80 + 60 * ("abc".index(c))).astype(np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return str(root)


# ------------------------------------------------- Optuna studies (sweeps/, e2e/)
def optuna_study(sweep: Path, name: str | None = None):
    """The Optuna study a sweep stored in its optuna.db (its only one, or the one named)."""
    import optuna

    storage = f"sqlite:///{sweep / 'optuna.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert name is None and len(names) == 1 or name in names, names
    return optuna.load_study(study_name=name or names[0], storage=storage)


def trial_states(study) -> dict[str, int]:
    """How many trials of a study are in each state, by the state's name."""
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def start_local(script: str) -> str:
    """`bash scripts/<script> start` (the local SLURM cluster, PostgreSQL); returns its stdout.

    Skips, saying why, only where the service cannot be started here (not root, no apt-get
    to install it); any other failure fails the test with the script's own words.
    """
    import shutil

    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"scripts/{script} needs root (it installs with apt-get and starts system daemons)")
    p = subprocess.run(
        ["bash", str(REPO / "scripts" / script), "start"], capture_output=True, text=True, timeout=900
    )
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        if shutil.which("apt-get") is None:
            pytest.skip(f"scripts/{script} cannot start here: {why}")
        pytest.fail(f"scripts/{script} start failed: {p.stderr[-3000:]}")
    return p.stdout


# ---------------------------------------------------------------- the local SLURM cluster
# What a job of hydra/launcher=slurm needs overridden to fit the one CPU node of
# scripts/slurm_local.sh (the preset asks for a GPU, 8 CPUs and 32 GB).
SLURM_FIT = [
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def slurm_jobs(sweep: Path) -> list[str]:
    """The SLURM job ids submitit ran a sweep's jobs as (`7`, or `7_0`, `7_1` for an array),
    read from its folders under <sweep>/.submitit, in job order."""
    found = [d.name for d in (sweep / ".submitit").glob("*") if list(d.glob("*_log.out"))]
    return sorted(found, key=lambda j: tuple(int(x) for x in j.split("_")))


def finished_slurm_job(job_id: str, timeout: float = 60) -> dict[str, str]:
    """`scontrol show job` of a job SLURM still remembers (MinJobAge), its fields by name, once
    the job has ended: its batch script may outlive the results pdl-run reads by a moment."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
        ).stdout
        info = dict(f.split("=", 1) for f in out.split() if "=" in f)
        if info.get("JobState") not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") or (
            time.monotonic() > deadline
        ):
            return info
        time.sleep(0.5)


def wait_for_text(find, text: str, timeout: float, proc=None) -> Path:
    """The first file of `find()` (a list of paths) holding `text`, once one does."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in find():
            if text in path.read_text(errors="replace"):
                return path
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pdl-run ended (exit {proc.returncode}) before {text!r} appeared")
        time.sleep(0.5)
    raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s")


class SweepInBackground:
    """`pdl-run <args>` started in the background (its output in <cwd>/pdl-run.log), its
    SLURM jobs named `name`. Leaving the block on an error, or with pdl-run still running,
    stops what is left: the process and the cluster's jobs of that name."""

    def __init__(self, args: list[str], cwd: Path, name: str):
        self.args = [*args, f"hydra.launcher.name={name}"]
        self.cwd, self.name = cwd, name
        self.log = cwd / "pdl-run.log"

    def __enter__(self) -> SweepInBackground:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "pdl_experiments.cli", *self.args],
                cwd=self.cwd,
                env={**ENV, "COLUMNS": "250"},  # one line per log record in the job logs
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pdl-run did not end within {timeout:.0f} s: {self.output()[-3000:]}"
            ) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, exc_type, *exc) -> None:
        import signal

        if exc_type is None and self.proc.poll() is not None:
            return  # pdl-run ended on its own: its jobs are done (some may still be completing)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        subprocess.run(["scancel", f"--name={self.name}"], capture_output=True)


# ---------------------------------------------------------------- an MLflow tracking server
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 (SQLite behind it, artifacts in `store`), as README advises
    for parallel launchers. start() waits until it answers; kill() ends it at once (SIGKILL to
    its process group, as a crash would); start() again serves the same store on the same port."""

    def __init__(self, store: Path):
        self.store = store
        store.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> str:
        import time
        import urllib.request

        cmd = [PY, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{self.store / 'mlflow.db'}"]
        cmd += ["--artifacts-destination", str(self.store / "artifacts")]
        log = self.store / "server.log"
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.store,
                # It reports nowhere, and starts no job runner (MLflow 3's GenAI jobs: a dozen processes).
                env={
                    **ENV,
                    "MLFLOW_DISABLE_TELEMETRY": "true",
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the server and its workers: one process group to stop
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"mlflow server exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.url
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server did not answer: {log.read_text()[-3000:]}"
            time.sleep(0.3)

    def stop(self, sig: int | None = None) -> None:
        """End the server and its workers (SIGTERM, or `sig`; SIGKILL after 20 s)."""
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig or signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        import signal

        self.stop(signal.SIGKILL)
