"""RunContext: what a technique may use, and the owner of its phases and of resume.

A technique's recipe is a sequence of phases (train -> prune -> fine-tune; search ->
retrain). It asks the context for each one and says what it produced:

    ph = ctx.phase("baseline")
    if not ph.done:                      # finished before a resume: skip its work
        ctx.fit(task, phase=ph.name)     # resumed inside it: the trainer continues
        ph.finish(acc=...)               # what it produced (plain values, tensors)
    acc = ph.record["acc"]

`ph.record` is saved in every checkpoint, so what a phase wrote there before an
interruption (a value measured before its training, say) comes back with it. A phase the
run was interrupted in has `ph.resumed` set: its preparation that changes the architecture
(pruning) is not redone; the trainer restores the architecture through the task's
`restore_architecture` hook before loading the checkpoint's weights. Techniques never open
the resume checkpoint themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import DataSplits, LimitedLoader, TensorLoader, first_batches, limit_batches, limit_count
from ..loading.safety import load_yaml_config
from ..models import BatchNormSpec, build_model, count_params
from ..parallel import distributed
from ..training import FitResult, RunState, Trainer, load_checkpoint, streams
from ..training.checkpoint import CheckpointError, UnreadableCheckpoint
from ..training.logger import RunLogger
from .debug import DebugTools


@dataclass
class Phase:
    """One step of a technique's recipe, as far as this run (and its resume) got with it."""

    name: str
    done: bool  # finished in an earlier process: its work is skipped, `record` holds its results
    resumed: bool  # the resume checkpoint was taken inside this phase
    record: dict  # what the phase produced so far; kept in every checkpoint
    _state: RunState

    def finish(self, **produced: Any) -> dict:
        """Record what the phase produced and mark it done (saved with the next checkpoint)."""
        self.record.update(produced)
        if self.name not in self._state.phases_done:
            self._state.phases_done.append(self.name)
        self.done = True
        return self.record


class RunContext:
    """Everything a technique needs, and nothing it has to set up itself."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        data: DataSplits,
        device: torch.device,
        logger: RunLogger | None,
        resume: dict | None = None,
        stop_file: Path | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        t = cfg.trainer
        if t.limit_val_batches is not None or t.limit_test_batches is not None:
            # Cut the splits themselves: every score of val or test, the trainer's or a
            # technique's own loop over the tensors (attacks, FID), sees the same batches.
            bs = int(t.eval_batch_size)
            data = replace(
                data,
                val=first_batches(data.val, t.limit_val_batches, bs),
                test=first_batches(data.test, t.limit_test_batches, bs),
            )
        self.data = data
        self.device = device
        self.logger = logger
        self.state = RunState(
            stop_file=stop_file,
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
            technique=str(cfg.technique),
        )
        self._resume = resume  # the checkpoint of trainer.resume (see load_resume)
        if resume is not None:
            self.state.extra = dict(resume.get("extra", {}))
            self.state.phases_done = list(resume.get("phases_done", []))
        self.augment = None
        if data.info.kind == "image":
            from ..data.augment import build_augmentation

            self.augment = build_augmentation(cfg.augmentation, data.info.in_shape)
        self.trainer = self._make_trainer()  # one per run: the step count runs on across phases
        self.debug = DebugTools(cfg, self.run_dir, self.trainer, logger, device)  # trainer.profiler, ...

    # -- phases --------------------------------------------------------------------------
    def phase(self, name: str) -> Phase:
        record = self.state.extra.setdefault("phases", {}).setdefault(name, {})
        done = name in self.state.phases_done
        resumed = not done and self._resume is not None and self._resume.get("phase") == name
        return Phase(name, done, resumed, record, self.state)

    # -- building blocks -----------------------------------------------------------------
    @property
    def norm(self) -> BatchNormSpec:
        return BatchNormSpec.from_config(self.cfg.bn)

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    @property
    def first_step_at(self) -> float | None:
        return self.trainer.first_step_at

    @property
    def train_time_s(self) -> float:
        return self.trainer.train_time_s

    def build_model(self, model_cfg: Any = None, **extra) -> torch.nn.Module:
        """The configured model (or `model_cfg`), sized from the data, on the device."""
        model = build_model(
            model_cfg if model_cfg is not None else self.cfg.model, self.data.info, self.norm, **extra
        )
        return model.to(self.device)

    def train_loader(
        self,
        split: tuple[torch.Tensor, torch.Tensor] | None = None,
        augment: bool = True,
        batch_size: int | None = None,
        seed_offset: int = 0,
    ) -> TensorLoader:
        x, y = split if split is not None else self.data.train
        gen = torch.Generator().manual_seed(int(self.cfg.seed) + streams.LOADER + seed_offset)
        return TensorLoader(
            x,
            y,
            batch_size or int(self.cfg.trainer.batch_size),
            shuffle=True,
            generator=gen,
            transform=self.augment if augment else None,
            # Under DDP each rank's slice of every global batch (one order for all ranks).
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )

    def loader(self, split: str | tuple[torch.Tensor, torch.Tensor]) -> TensorLoader | LimitedLoader:
        x, y = getattr(self.data, split) if isinstance(split, str) else split
        loader = TensorLoader(x, y, int(self.cfg.trainer.eval_batch_size))
        limit = self.cfg.trainer.limit_test_batches
        if limit is None or (isinstance(split, str) and split in ("val", "test")):  # cut in __init__
            return loader
        # Scores on the training split (final/train_acc) or on given tensors: as test's.
        return LimitedLoader(loader, limit_count(limit, len(loader)))

    def make_optimizer(self, params, **overrides):
        from hydra.utils import instantiate

        return instantiate(self.cfg.optimizer, **overrides)(params)

    def _make_trainer(self) -> Trainer:
        make_sched = None
        if self.cfg.scheduler is not None:
            from hydra.utils import instantiate

            make_sched = instantiate(self.cfg.scheduler)
        return Trainer(
            self.cfg.trainer,
            self.device,
            self.state,
            self.run_dir / "checkpoints",
            self.make_optimizer,
            make_sched,
            self.logger,
        )

    def fit(self, task, phase: str = "train", train=None, val: Any = "val", **kw) -> FitResult:
        """Train `task` with the shared trainer on the train split (or `train`), validate on val.

        In the phase the resume checkpoint was taken in, the trainer continues from it.
        """
        resume = None
        if self._resume is not None and self._resume.get("phase") == phase:
            resume, self._resume = self._resume, None
        val_loader = self.loader(val) if val is not None else None
        t = self.cfg.trainer
        train = limit_batches(
            train if train is not None else self.train_loader(),
            t.limit_train_batches,
            int(t.overfit_batches),
        )
        self.debug.start_phase(phase, train)
        return self.trainer.fit(
            task,
            train,
            val_loader,
            phase=phase,
            resume=resume,
            **kw,
        )

    def evaluate(self, task, split: str = "test") -> dict[str, float]:
        return {f"{split}/{k}": v for k, v in self.trainer.evaluate(task, self.loader(split)).items()}

    def classification_metrics(self, task, model: torch.nn.Module) -> dict[str, float]:
        """The keys every image run reports: val/acc, test/acc, params, train/time_s."""
        metrics = {}
        metrics.update(self.evaluate(task, "val"))
        metrics.update(self.evaluate(task, "test"))
        # Accuracy on the (un-augmented) training split: the train-test gap shows overfitting.
        train_acc = self.evaluate(task, "train")["train/acc"]
        metrics["final/train_acc"] = train_acc
        metrics["final/train_test_gap"] = train_acc - metrics["test/acc"]
        metrics["params"] = count_params(model)
        metrics["train/time_s"] = self.train_time_s
        return metrics

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0, nrow: int = 8) -> None:
        if self.logger is None:
            return
        from torchvision.utils import make_grid

        self.logger.image(tag, make_grid(images.detach().float().cpu(), nrow=nrow, pad_value=1.0), step)


def load_resume(cfg: DictConfig, path: str) -> dict:
    """The checkpoint `trainer.resume` names, checked to belong to this kind of run."""
    ckpt = load_checkpoint(path, "last.pt")
    if ckpt.get("technique") != str(cfg.technique):
        raise CheckpointError(
            f"trainer.resume={path} is a checkpoint of technique="
            f"{ckpt.get('technique')}, not technique={cfg.technique}"
        )
    old = load_yaml_config(text=ckpt.get("config") or "{}")  # read as data: bounded, no aliases
    old_model = OmegaConf.select(old, "model._target_")
    if old_model is not None and old_model != cfg.model.get("_target_"):
        raise CheckpointError(
            f"trainer.resume={path} holds a {old_model.rsplit('.', 1)[-1]} "
            f"model, not {str(cfg.model.get('_target_')).rsplit('.', 1)[-1]}"
        )
    return ckpt


def load_resume_auto(cfg: DictConfig, ckpt_dir: Path) -> dict | None:
    """`trainer.resume=auto`: the run directory's last.pt (None: there is none, a fresh start).
    An unreadable last.pt (truncated by a full disk, corrupted): the newest intact snapshot the
    run kept (`trainer.keep`), with a warning; none intact is one line naming what to delete."""
    import logging

    last = ckpt_dir / "last.pt"
    if not last.is_file():
        return None
    try:
        return load_resume(cfg, str(last))
    except UnreadableCheckpoint as e:
        bad = str(e)
    snaps = sorted(ckpt_dir.glob("*_epoch*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in snaps:
        try:
            ckpt = load_resume(cfg, str(snap))
        except UnreadableCheckpoint:
            continue
        logging.getLogger("pdl_experiments").warning(
            "%s; resuming from %s instead, the newest intact checkpoint the run kept (trainer.keep)",
            bad,
            snap.name,
        )
        return ckpt
    kept = (
        f"none of its {len(snaps)} snapshots is intact" if snaps else "no snapshot was kept (trainer.keep=0)"
    )
    raise CheckpointError(
        f"{bad}; {kept}: delete {last} to start the run over (trainer.resume=auto then starts afresh)"
    )
