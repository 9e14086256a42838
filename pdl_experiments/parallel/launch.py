"""Starting, joining and ending the processes of a run on several (distributed.py says what
they do once started): `pdl-run trainer.devices=N` starts ranks 1..N-1 itself; under
torchrun, srun or submitit each process joins the group the launcher's environment
describes. Also the GPU a sweep job gets (`assign_gpus`).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..errors import PdlError, RunEnded
from . import distributed
from .distributed import Session, broadcast, is_main

log = logging.getLogger("pdl_experiments")

READY_KEY = "pdl/ready/{}"  # set by each worker in the store before it joins the group
START_TIMEOUT_S = 600.0  # for the workers to start (import torch, ...) and join
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
JOIN_TIMEOUT_S = 300.0  # for the workers to finish the run after rank 0 did


class ProcessFailed(PdlError, RuntimeError):
    """Another rank of the run failed; the message is its error, in one line."""


def assign_gpus(job_num: int, visible: int, devices: int = 1) -> list[int]:
    """The CUDA devices (indices among the visible ones) of sweep job `job_num` when jobs run
    side by side on one machine: round-robin over blocks of `devices` GPUs, so two jobs
    running at the same time share no GPU as long as there are blocks enough.

    assign_gpus(j, 4) -> [j % 4]; assign_gpus(j, 4, devices=2) -> [0, 1] or [2, 3]; [] without GPUs.
    """
    if visible < 1:
        return []
    if not 1 <= devices <= visible:
        raise ValueError(f"devices={devices}: expected 1..{visible} (the visible CUDA devices)")
    slot = job_num % (visible // devices)
    return list(range(slot * devices, (slot + 1) * devices))


def external_launch() -> dict[str, Any] | None:
    """Rank and world size from a launcher's environment (torchrun, or an srun step with
    several tasks); None when this process was not started as one of several."""
    env = os.environ
    if env.get("RANK") is not None and int(env.get("WORLD_SIZE") or 1) > 1:
        world = int(env["WORLD_SIZE"])
        return {
            "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
            "rank": int(env["RANK"]),
            "world": world,
            "local_rank": int(env.get("LOCAL_RANK", 0)),
            "local_world": int(env.get("LOCAL_WORLD_SIZE", world)),
        }
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    # SLURM_STEP_ID: inside an srun step (submitit starts its tasks so); a batch script's
    # own shell has SLURM_NTASKS but is one process.
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and tasks > 1:
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
        return {
            "launcher": "slurm",
            "rank": int(env["SLURM_PROCID"]),
            "world": tasks,
            "local_rank": int(env.get("SLURM_LOCALID", 0)),
            "local_world": max(1, tasks // nodes),
        }
    return None


# -------------------------------------------------------------------------------- start, end
def check(cfg: Any, device: torch.device) -> None:
    """trainer.devices and trainer.sync_bn against this machine, before any process starts."""
    devices = int(cfg.trainer.devices)
    external = external_launch()
    if external is not None and devices > 1 and devices != external["local_world"]:
        raise ConfigError(
            f"trainer.devices={devices}, but {external['launcher']} started "
            f"{external['local_world']} processes per node: leave trainer.devices at 1 (the "
            "launcher decides) or set it to that number"
        )
    world = external["world"] if external is not None else devices
    if world > 1 and device.type == "mps":
        raise ConfigError(f"trainer.devices={devices}: more than one process needs CUDA or the CPU, not MPS")
    if external is None and devices > 1 and device.type == "cuda" and devices > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={devices}, but {torch.cuda.device_count()} CUDA devices are visible: "
            f"expected 1..{torch.cuda.device_count()} (or trainer.device=cpu)"
        )
    if world > 1 and bool(cfg.trainer.sync_bn) and device.type != "cuda":
        raise ConfigError(
            "trainer.sync_bn=true needs CUDA: torch's SyncBatchNorm has no CPU forward; "
            "set trainer.sync_bn=false on the CPU"
        )
    if world > int(cfg.trainer.batch_size):
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} is the global batch, shared by {world} "
            f"processes: expected trainer.batch_size >= {world}"
        )


def setup(
    cfg: Any,
    run_dir: Path,
    device: torch.device,
    stop_file: Path | None = None,
    entry: Callable[..., Any] | None = None,
) -> tuple[Path, torch.device]:
    """Join this run's processes, or start them (rank 0 of `trainer.devices=N`).

    `entry(cfg, run_dir, stop_file)` is what every started process runs (the run itself; this
    module is handed it and never imports the run). Returns rank 0's run directory and this
    rank's device. One process: the run directory as given, and in a sweep on a multi-GPU
    machine the job's own GPU (assign_gpus).
    """
    import torch.distributed as dist

    told = distributed.session()  # a worker of pdl-run's own launch: its place (_worker)
    distributed.begin(Session())
    check(cfg, device)
    devices = int(cfg.trainer.devices)
    external = external_launch()
    cuda = device.type == "cuda"
    if dist.is_available() and dist.is_initialized():  # a worker of pdl-run's launch, or a caller's group
        _adopt_group(dist, told)
    elif external is not None:
        _join_external(external, cuda)
    elif devices > 1:
        if entry is None:
            raise ValueError("launch.setup: trainer.devices > 1 needs the entry each process runs")
        _start_workers(cfg, run_dir, stop_file, devices, cuda, entry)
    else:
        job = _sweep_job()
        if cuda and job is not None and torch.cuda.device_count() > 1:
            distributed.session().gpus = assign_gpus(job, torch.cuda.device_count())
            torch.cuda.set_device(distributed.session().gpus[0])
            device = torch.device("cuda", distributed.session().gpus[0])
        return Path(run_dir), device
    return _settle(cfg, run_dir, device)


def _adopt_group(dist: Any, told: Session) -> None:
    """A worker of pdl-run's own launch (`told` its place by _worker) or a caller's process
    group: the group exists."""
    r, w, backend = dist.get_rank(), dist.get_world_size(), str(dist.get_backend())
    if told.launcher == "pdl-run":
        distributed.begin(replace(told, rank=r, world_size=w, backend=backend))
    else:
        local = int(os.environ.get("LOCAL_RANK", r))
        distributed.begin(Session(r, w, local, w, launcher="caller", backend=backend))


def _join_external(external: dict[str, Any], cuda: bool) -> None:
    """torchrun, srun, submitit: form the group their environment describes."""
    import torch.distributed as dist

    if external["launcher"] == "slurm":
        _export_slurm_rendezvous()
    s = distributed.begin(
        Session(
            rank=external["rank"],
            world_size=external["world"],
            local_rank=external["local_rank"],
            local_world_size=external["local_world"],
            launcher=external["launcher"],
            backend="nccl" if cuda else "gloo",
            owns_group=True,
        )
    )
    if cuda:
        gpu = external["local_rank"] % torch.cuda.device_count()
        s.gpus = [gpu]
        torch.cuda.set_device(gpu)
    dist.init_process_group(
        str(s.backend), init_method="env://", rank=s.rank, world_size=s.world_size, timeout=COLLECTIVE_TIMEOUT
    )


def _start_workers(
    cfg: Any, run_dir: Path, stop_file: Path | None, devices: int, cuda: bool, entry: Callable[..., Any]
) -> None:
    """`trainer.devices=N`: this process becomes rank 0 and starts ranks 1..N-1."""
    job = _sweep_job()
    gpus: list[int] = []
    if cuda:
        gpus = (
            assign_gpus(job, torch.cuda.device_count(), devices) if job is not None else list(range(devices))
        )
    distributed.begin(
        Session(
            world_size=devices,
            local_world_size=devices,
            launcher="pdl-run",
            backend="nccl" if cuda else "gloo",
            gpus=gpus,
            owns_group=True,
        )
    )
    if cuda:
        torch.cuda.set_device(gpus[0])
    _launch(cfg, run_dir, stop_file, entry)


def _settle(cfg: Any, run_dir: Path, device: torch.device) -> tuple[Path, torch.device]:
    """Once the group exists: this rank's device and threads, and rank 0's run directory."""
    import torch.distributed as dist

    s = distributed.session()
    if device.type == "cuda":
        device = torch.device("cuda", s.gpus[s.local_rank] if len(s.gpus) > s.local_rank else s.gpus[-1])
    # Agreements (stop flags, broadcast objects) go over gloo: on NCCL they would be a device
    # sync; gloo's are a few tens of microseconds on the host.
    s.control = dist.new_group(backend="gloo") if s.backend == "nccl" else None
    if device.type == "cpu" and int(cfg.trainer.num_threads) == 0:
        # torch's default is every core for every process: N processes would fight over them.
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // s.local_world_size))
    own = Path(run_dir)
    main_dir = Path(broadcast(str(own)))
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 tells the story
        _drop_own_output_dir(own, main_dir)
    return main_dir, device


def shutdown(error: BaseException | None = None) -> BaseException | None:
    """This process's end of the run: the process group; on rank 0 of pdl-run's own launch,
    the workers too (waited for, or stopped when the run failed). Safe to call always.

    Returns the error to raise instead of `error` when a worker failed (its message), else None.
    """
    import torch.distributed as dist

    s = distributed.session()
    # What is left for after the run: who this process was (is_main()), not a group to use.
    distributed.begin(Session(rank=s.rank))
    grouped = s.world_size > 1 and dist.is_available() and dist.is_initialized()
    if grouped and error is None:
        try:
            dist.barrier(group=s.control)  # nobody tears down while another is mid-collective
        except Exception as e:  # a peer is gone: what it said is in its own report
            log.debug("final barrier: %s", e)
    if grouped and s.owns_group:
        try:
            dist.destroy_process_group()
        except Exception as e:
            log.debug("process group teardown: %s", e)
    if s.workers is None:
        return None
    agreed = error is None or isinstance(error, RunEnded)  # every rank stopped at the same step
    failure = _join_workers(s.workers, JOIN_TIMEOUT_S if agreed else 10.0)
    if failure is None:
        return None
    if isinstance(error, PdlError):
        return None  # rank 0's own error came first: the workers were stopped because of it
    return ProcessFailed(failure)


def _launch(cfg: Any, run_dir: Path, stop_file: Path | None, entry: Callable[..., Any]) -> None:
    """Rank 0 of `trainer.devices=N`: start ranks 1..N-1 and form the group with them."""
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from omegaconf import OmegaConf

    s = distributed.session()
    s.store = dist.TCPStore(
        "127.0.0.1",
        0,  # a free port, chosen by the OS: no race between runs started side by side
        s.world_size,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=START_TIMEOUT_S),
    )
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)  # ${now:} and ${hydra:...} as rank 0 saw them
    payload = {
        "cfg": resolved,
        "run_dir": str(run_dir),
        "stop_file": None if stop_file is None else str(stop_file),
        "port": s.store.port,
        "world": s.world_size,
        "backend": s.backend,
        "gpus": s.gpus,
        "hydra": _hydra_state(),
        "entry": entry,  # a module-level function: pickled by name, imported by the worker
    }
    log.info("starting %d more processes (%s, port %d)", s.world_size - 1, s.backend, s.store.port)
    s.workers = mp.start_processes(
        _worker, args=(payload,), nprocs=s.world_size - 1, join=False, start_method="spawn"
    )
    keys = [READY_KEY.format(r) for r in range(1, s.world_size)]
    deadline = time.monotonic() + START_TIMEOUT_S
    while not s.store.check(keys):  # a worker that dies while starting fails the run at once
        if s.workers.join(timeout=0.05):
            raise ProcessFailed("the worker processes ended before joining the run")
        if time.monotonic() > deadline:
            raise ProcessFailed(f"the worker processes did not start within {START_TIMEOUT_S:.0f} s")
    dist.init_process_group(
        s.backend, store=s.store, rank=0, world_size=s.world_size, timeout=COLLECTIVE_TIMEOUT
    )


def _worker(index: int, payload: dict[str, Any]) -> None:
    """Rank index + 1 of a run pdl-run started with trainer.devices=N (a spawned interpreter)."""
    import torch.distributed as dist

    rank, world = index + 1, int(payload["world"])
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    if payload["hydra"] is not None:  # HydraConfig.get() answers as in rank 0 (choices, overrides)
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().cfg = payload["hydra"]
    gpus = list(payload["gpus"])
    if gpus:
        torch.cuda.set_device(gpus[rank])
    # Its place, for launch.setup to adopt when the run starts (the session is reset there).
    distributed.begin(Session(rank, world, rank, world, launcher="pdl-run", gpus=gpus))
    store = dist.TCPStore(
        "127.0.0.1", int(payload["port"]), world, is_master=False, timeout=timedelta(seconds=START_TIMEOUT_S)
    )
    store.set(READY_KEY.format(rank), "1")
    dist.init_process_group(
        str(payload["backend"]), store=store, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    stop_file = payload["stop_file"]
    parent = os.getppid()
    try:
        payload["entry"](payload["cfg"], payload["run_dir"], Path(stop_file) if stop_file else None)
    except RunEnded:
        pass  # every rank stopped at the same step; rank 0 reports it
    except BaseException:
        if os.getppid() != parent:  # rank 0 was killed: nobody to report to, nothing to leave behind
            os._exit(1)
        raise  # rank 0 reads it (torch's error file) and reports it
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _join_workers(workers: Any, grace: float) -> str | None:
    """Wait up to `grace` s for the workers, then stop what is left; the first failure, if any."""
    deadline = time.monotonic() + grace
    failure = None
    try:
        while not workers.join(timeout=max(0.0, min(1.0, deadline - time.monotonic())), grace_period=5):
            if time.monotonic() >= deadline:
                break
    except Exception as e:  # ProcessRaisedException (its traceback) / ProcessExitedException
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        what = f"failed: {lines[-1] if lines else type(e).__name__}"
        if getattr(e, "signal_name", None):
            what = f"was killed by {getattr(e, 'signal_name', '')}"
        elif getattr(e, "exit_code", None) is not None:
            what = f"exited with code {getattr(e, 'exit_code', '')}"
        failure = f"rank {getattr(e, 'error_index', 0) + 1} {what}"
    for p in workers.processes:
        if p.is_alive():
            p.terminate()
    for p in workers.processes:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    for f in workers.error_files:  # torch leaves a crashed worker's traceback file behind
        if f:
            Path(f).unlink(missing_ok=True)
    return failure


def _export_slurm_rendezvous() -> None:
    """MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE / LOCAL_RANK from an srun step's
    environment, the way submitit computes them (first node of the job, a port from the job id)."""
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise ConfigError(
            "an srun step with several tasks needs submitit for the rendezvous: "
            'pip install "pdl-experiments[launchers]" (or set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE)'
        ) from None
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def _sweep_job() -> int | None:
    """The Hydra job number of a sweep whose jobs share this machine (basic, joblib); None for
    a single run or a SLURM sweep (each job has GPUs of its own)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hc.mode != RunMode.MULTIRUN or "submitit" in str(hc.launcher.get("_target_", "")):
        return None
    return int(hc.job.num)


def _hydra_state() -> Any:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.instance().cfg
    except ImportError:
        return None


def _drop_own_output_dir(own: Path, main_dir: Path) -> None:
    """A non-zero rank started by an outside launcher: Hydra made it a directory of its own
    (its `${now:}`); the run lives in rank 0's. Remove ours when Hydra's files are all it holds."""
    try:
        if own.resolve() == main_dir.resolve() or not own.is_dir():
            return
    except OSError:
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent.resolve() == own.resolve():
            root.removeHandler(h)
            h.close()
    if all(p.name == ".hydra" or p.suffix == ".log" for p in own.iterdir()):
        shutil.rmtree(own, ignore_errors=True)
        with _suppress_os_error():
            own.parent.rmdir()  # the date directory, when this rank alone made it


@contextmanager
def _suppress_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
