"""More than one process: one run trained by N processes with DistributedDataParallel.

Who starts the processes:

* `pdl-run trainer.devices=N`: pdl-run itself. Once Hydra has composed the config and made
  the run directory, the pdl-run process becomes rank 0: it opens a TCPStore on a free port
  and starts ranks 1..N-1 with torch.multiprocessing's `start_processes` (spawn: fresh
  interpreters, as CUDA needs), handing them the resolved config, the run directory and
  the store's port. It supervises them: a worker that dies is reported as one line, and
  when the run ends (or fails) no worker outlives it.
* torchrun, srun, submitit (`hydra/launcher=slurm_ddp`): every process runs pdl-run, and so
  `@hydra.main`, itself. Ranks come from RANK / WORLD_SIZE / LOCAL_RANK (torchrun), or from
  SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID inside an srun step, exported by submitit's
  `TorchDistributedEnvironment` (rendezvous on the job's first node). `${now:}` resolves
  per process, so each rank's Hydra made a directory of its own: rank 0's is broadcast and
  the others remove theirs (only Hydra's files are in it) and write nothing.

What every rank does: the whole run, the same code on the same data (SPMD). Model
initialisation, evaluation, a technique's own measurements run on every rank on identical
weights, so every rank takes the same decisions (best epoch, early stopping, which blocks to
prune) without being told; the few decisions that depend on the clock or on rank 0 alone
(a checkpoint due, a stop request, an epoch hook's StopRun) are broadcast. Only the training
step is split: each rank takes its slice of every global batch (data.TensorLoader) and
DistributedDataParallel averages the gradients. Only rank 0 writes (event files,
checkpoints, metrics.json, env.json).

`trainer.batch_size` is the global batch: N processes each take batch_size / N samples per
step, so a run's optimisation does not change with the number of processes (exactly so when
batch_size is a multiple of N and the model has no batch statistics: BN normalises over
each process's share unless trainer.sync_bn=true).

This module is what a run uses while it trains (who am I, the agreements between ranks,
the DDP-wrapped step); starting, joining and ending the processes is launch.py.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ..config import ConfigError

log = logging.getLogger("pdl_experiments")
T = TypeVar("T")


@dataclass
class Session:
    """This process's place in the run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str | None = None  # pdl-run | torchrun | slurm | env | caller; None: one process
    backend: str | None = None  # gloo | nccl
    gpus: list[int] = field(default_factory=list)  # CUDA index of each local rank
    workers: Any = None  # ranks 1..N-1 (torch.multiprocessing ProcessContext), on rank 0 of pdl-run's launch
    store: Any = None
    control: Any = None  # process group of the CPU-side agreements (None: the default group)
    owns_group: bool = False


_session = Session()


def session() -> Session:
    """This process's session (launch.py fills it in when the run's processes meet)."""
    return _session


def begin(new: Session) -> Session:
    """Make `new` this process's session (launch.py, at the start and the end of a run)."""
    global _session
    _session = new
    return new


# -------------------------------------------------------------------------------- who am I
def rank() -> int:
    return _session.rank


def world_size() -> int:
    return _session.world_size


def is_main() -> bool:
    """Rank 0: the one process that writes (also after the run, until the next one starts)."""
    return _session.rank == 0


def describe() -> dict[str, Any]:
    """What env.json records about the run's processes."""
    s = _session
    return {
        "world_size": s.world_size,
        "launcher": s.launcher,
        "backend": s.backend,
        "gpus": list(s.gpus),  # CUDA index of each local rank ([] on the CPU)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


# -------------------------------------------------------------------------------- agreements
def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (pickled; tensors in it travel on the CPU)."""
    if _session.world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_session.control)
    return box[0]


def from_main(fn: Callable[[], T]) -> T:
    """fn() on rank 0 only; its result, or the exception it raised, on every rank."""
    if _session.world_size == 1:
        return fn()
    result: Any = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except Exception as e:
            error = e
    sent = error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:
            sent = RuntimeError(str(error))
    result, sent = broadcast((result, sent))
    if error is not None:
        raise error
    if sent is not None:
        raise sent
    return result


def agree_stop(state: Any) -> bool:
    """state.should_stop() on any rank (a signal, a sweep's stop file) stops every rank at the
    same step; the signal is recorded on each (RunState.stop_signal)."""
    local = state.should_stop()
    if _session.world_size == 1:
        return local
    import torch.distributed as dist

    flag = torch.tensor([int(state.stop_signal or 0) if local else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_session.control)
    signum = int(flag.item())
    if signum and state.stop_signal is None:
        state.stop_signal = signum
    return signum != 0


def all_sum(value: float) -> float:
    """The sum over the ranks (one process: the value)."""
    if _session.world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, group=_session.control)
    return float(t.item())


def gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if _session.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * _session.world_size
    dist.all_gather_object(out, obj, group=_session.control)
    return out


def barrier() -> None:
    if _session.world_size > 1:
        import torch.distributed as dist

        dist.barrier(group=_session.control)


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache filled), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) on every rank."""
    if _session.world_size == 1:
        return
    import torch.distributed as dist

    for b in module.buffers():
        dist.broadcast(b, src=0)


# -------------------------------------------------------------------------------- the model
class _Step(nn.Module):
    """A task's training step as a forward pass, so DDP sees the step's whole forward."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.task = task

    def forward(self, batch: Any, trainer: Any) -> Any:
        return self.task.training_step(batch, trainer)  # type: ignore[operator]


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Every torch BatchNorm of `module` as a SyncBatchNorm (in place; same parameters and
    buffers, so optimizers and state dicts are unchanged)."""
    for name, child in module.named_children():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            module.add_module(name, converted)
    return module


def wrap_step(
    task: Any, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, sync_bn: bool
) -> Any:
    """The training step this process calls: the task's own (one process), or through
    DistributedDataParallel. DDP covers the parameters the optimizers train: a frozen network
    a task carries along (an attack's target) neither needs nor gets gradients synced."""
    if _session.world_size == 1:
        return task.training_step
    from torch.nn.parallel import DistributedDataParallel as DDP

    if task.manual_optimization:
        raise ConfigError(
            f"{type(task).__name__} steps its optimizers itself, which DistributedDataParallel "
            "does not cover: run it with trainer.devices=1"
        )
    if sync_bn:
        convert_sync_bn(task)
    trained = {id(p) for o in optimizers.values() for g in o.param_groups for p in g["params"]}
    step = _Step(task)
    frozen = [f"task.{n}" for n, p in task.named_parameters() if id(p) not in trained]
    DDP._set_params_and_buffers_to_ignore_for_model(step, frozen)
    return DDP(
        step,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
    )


def own_rng(ckpt: dict) -> dict:
    """This rank's RNG state in a checkpoint (one saved per rank by a run of as many)."""
    per_rank = ckpt.get("rng_ranks")
    if per_rank is not None and len(per_rank) == _session.world_size:
        return per_rank[_session.rank]
    return ckpt["rng"]
