"""run(cfg): seed, build data and model pieces, hand off to the technique, record results.

Kept apart from the Hydra entry point (cli.py) so tests and notebooks can call it with a
config composed any way they like.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, typed, validate
from .data import DataSplits, TensorLoader
from .models import BatchNormSpec, build_model, count_params
from .training import FitResult, RunState, Trainer, load_checkpoint
from .training.checkpoint import CheckpointError, save_atomic
from .training.logger import RunLogger

log = logging.getLogger("pdl_experiments")


def resolve_device(name: str) -> torch.device:
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.device=mps but MPS is not available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


class RunContext:
    """Everything a technique needs, and nothing it has to set up itself."""

    def __init__(self, cfg: DictConfig, run_dir: Path, data: DataSplits, device: torch.device,
                 logger: Optional[RunLogger], state: RunState):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.data = data
        self.device = device
        self.logger = logger
        self.state = state
        self.train_time_s = 0.0
        self.global_step = 0  # continues across phases so TensorBoard curves never overlap
        self.first_step_at: Optional[float] = None
        self.augment = None
        if data.info.kind == "image":
            from .data.augment import build_augmentation

            self.augment = build_augmentation(cfg.augmentation, data.info.in_shape)

    # -- building blocks ---------------------------------------------------------
    @property
    def norm(self) -> BatchNormSpec:
        bn = self.cfg.bn
        return BatchNormSpec(bool(bn.enabled), str(bn.impl), float(bn.momentum), float(bn.eps))

    def build_model(self, model_cfg: Any = None, **extra) -> torch.nn.Module:
        """The configured model (or `model_cfg`), sized from the data, on the device."""
        model = build_model(model_cfg if model_cfg is not None else self.cfg.model,
                            self.data.info, self.norm, **extra)
        return model.to(self.device)

    def train_loader(self, split: tuple[torch.Tensor, torch.Tensor] | None = None,
                     augment: bool = True, batch_size: Optional[int] = None,
                     seed_offset: int = 0) -> TensorLoader:
        x, y = split if split is not None else self.data.train
        gen = torch.Generator().manual_seed(int(self.cfg.seed) + 1000 + seed_offset)
        return TensorLoader(x, y, batch_size or int(self.cfg.trainer.batch_size), shuffle=True,
                            generator=gen, transform=self.augment if augment else None)

    def loader(self, split: str | tuple[torch.Tensor, torch.Tensor]) -> TensorLoader:
        x, y = getattr(self.data, split) if isinstance(split, str) else split
        return TensorLoader(x, y, int(self.cfg.trainer.eval_batch_size))

    def make_optimizer(self, params, **overrides):
        from hydra.utils import instantiate

        return instantiate(self.cfg.optimizer, **overrides)(params)

    def trainer(self, with_scheduler: bool = True) -> Trainer:
        make_sched = None
        if with_scheduler and self.cfg.scheduler is not None:
            from hydra.utils import instantiate

            sched = instantiate(self.cfg.scheduler)
            make_sched = lambda opt: sched(opt)  # noqa: E731
        return Trainer(self.cfg.trainer, self.device, self.state, self.run_dir / "checkpoints",
                       self.make_optimizer, make_sched, self.logger)

    def fit(self, task, phase: str = "train", train=None, val: Any = "val", **kw) -> FitResult:
        """Train `task` with the shared trainer on the train split (or `train`), validate on val."""
        trainer = self.trainer()
        trainer.global_step = self.global_step
        val_loader = self.loader(val) if val is not None else None
        result = trainer.fit(task, train if train is not None else self.train_loader(),
                             val_loader, phase=phase, **kw)
        self.train_time_s += result.time_s
        self.global_step = trainer.global_step
        if self.first_step_at is None:
            self.first_step_at = trainer.first_step_at
        return result

    def evaluate(self, task, split: str = "test") -> dict[str, float]:
        trainer = Trainer(self.cfg.trainer, self.device, self.state, self.run_dir / "checkpoints",
                          self.make_optimizer)
        return {f"{split}/{k}": v for k, v in trainer.evaluate(task, self.loader(split)).items()}

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


# ---------------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: Optional[str | Path] = None) -> dict[str, float]:
    """Run one experiment; returns (and writes to metrics.json) its final metrics."""
    threads = torch.get_num_threads()
    try:
        return _run(cfg, run_dir)
    finally:
        # trainer.num_threads is torch's process-wide setting: give it back, so the next job
        # of a sweep in this process (or the caller of run()) gets its own choice.
        torch.set_num_threads(threads)


def _run(cfg: DictConfig, run_dir: Optional[str | Path]) -> dict[str, float]:
    t_start = time.perf_counter()
    cfg = typed(cfg)  # types and enums checked (ConfigError naming the key), before any work
    validate(cfg)
    run_dir = Path(run_dir) if run_dir is not None else _hydra_output_dir()
    _check_writable(run_dir)
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(cfg.trainer.device)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)

    state = RunState(config_yaml=config_yaml, technique=str(cfg.technique))
    if cfg.trainer.resume:
        state.resume = _load_resume(cfg, str(cfg.trainer.resume))
        state.extra = dict(state.resume.get("extra", {}))
        state.phases_done = list(state.resume.get("phases_done", []))

    technique = importlib.import_module(f"pdl_experiments.techniques.{cfg.technique}")
    seed_everything(int(cfg.seed))
    from hydra.utils import instantiate

    data = instantiate(cfg.dataset, _convert_="all").to(device)
    logger = RunLogger(run_dir)
    ctx = RunContext(cfg, run_dir, data, device, logger, state)
    _write_env(run_dir, device)
    logger.text("config", "```\n" + config_yaml + "\n```")
    log.info("run dir: %s", run_dir)
    log.info("technique=%s model=%s dataset=%s device=%s  %s", cfg.technique,
             _choice("model"), data.info.name, device,
             " ".join(f"{k}={v}" for k, v in data.sizes().items()))
    if ctx.augment is not None and cfg.augmentation.grid:
        x = data.train[0][:32]
        ctx.log_images("augmentation/original", x)
        ctx.log_images("augmentation/augmented", ctx.augment(x))

    state.install_signal_handlers()
    try:
        metrics = dict(technique.run(ctx))
    finally:
        logger.flush()
    metrics.setdefault("train/time_s", ctx.train_time_s)
    metrics["run/wall_s"] = time.perf_counter() - t_start
    started = _process_start_time()
    if ctx.first_step_at is not None and started is not None:
        metrics["run/time_to_first_step_s"] = ctx.first_step_at - started
    metrics = {k: float(v) for k, v in metrics.items()}
    save_json(metrics, run_dir / "metrics.json")
    logger.hparams(_hparams(cfg), {k: v for k, v in metrics.items() if _is_final(k)},
                   step=ctx.global_step)
    logger.close()
    _print_summary(cfg, run_dir, metrics)
    return metrics


def save_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _process_start_time() -> Optional[float]:
    """When this launch started: $PDL_T0 (set by pdl-run at import, or earlier by a caller
    that wants interpreter start-up counted too, like scripts/bench.py)."""
    try:
        # Popped: the next job of a sweep in this process did not start at that moment.
        return float(os.environ.pop("PDL_T0"))
    except (KeyError, ValueError):
        return None


def _is_final(key: str) -> bool:
    return not key.startswith("train/") or key == "train/time_s"


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _choice(group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group))
    except ValueError:  # not running under Hydra (tests, notebooks)
        return "?"


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} is not writable ({e.strerror}); "
                          "set hydra.run.dir (or hydra.sweep.dir) to a writable place") from e


def _load_resume(cfg: DictConfig, path: str) -> dict:
    ckpt = load_checkpoint(path, "last.pt")
    if ckpt.get("technique") != str(cfg.technique):
        raise CheckpointError(f"trainer.resume={path} is a checkpoint of technique="
                              f"{ckpt.get('technique')}, not technique={cfg.technique}")
    old = OmegaConf.create(ckpt.get("config") or "{}")
    old_model = OmegaConf.select(old, "model._target_")
    if old_model is not None and old_model != cfg.model.get("_target_"):
        raise CheckpointError(f"trainer.resume={path} holds a {old_model.rsplit('.', 1)[-1]} "
                              f"model, not {str(cfg.model.get('_target_')).rsplit('.', 1)[-1]}")
    return ckpt


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """Flat, scalar hparams: the groups chosen, the overrides, the main knobs."""
    flat: dict[str, Any] = {"technique": str(cfg.technique), "seed": int(cfg.seed)}
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        for g in ("model", "dataset", "augmentation", "optimizer", "scheduler"):
            flat[g] = str(hc.runtime.choices.get(g))
        for o in hc.overrides.task:
            k, _, v = o.partition("=")
            if not k.startswith("hydra") and k != "trainer.resume":
                flat[k.lstrip("+~")] = _scalar(OmegaConf.select(cfg, k.lstrip("+~"), default=v))
    except ValueError:
        pass
    for key in ("optimizer.lr", "trainer.max_epochs", "trainer.batch_size", "bn.enabled"):
        flat.setdefault(key, _scalar(OmegaConf.select(cfg, key)))
    section = str(cfg.technique)
    if section in cfg and section != "bn":
        for k, v in OmegaConf.to_container(cfg[section], resolve=True, enum_to_str=True).items():
            flat.setdefault(f"{section}.{k}", _scalar(v))
    return flat


def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "value"):  # enums
        return str(v.value)
    return str(v)


def _write_env(run_dir: Path, device: torch.device) -> None:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("pdl-experiments", "torch", "torchvision", "hydra-core", "omegaconf",
                "tensorboard", "rich", "scikit-learn", "torch-pruning", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    commit = None
    try:
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "device": str(device), "torch_threads": torch.get_num_threads(),
           "git_commit": commit, "packages": versions, "argv": sys.argv,
           "pid": os.getpid(), "started_unix": time.time()}
    save_json(env, run_dir / "env.json")


def _print_summary(cfg: DictConfig, run_dir: Path, metrics: dict) -> None:
    from .training.progress import summary_table

    shown = {k: v for k, v in metrics.items() if _is_final(k)}
    summary_table(f"{cfg.technique} — {run_dir}", shown)


# ---------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    model: torch.nn.Module
    cfg: DictConfig
    data: DataSplits
    metrics: dict
    checkpoint: dict
    run_dir: Path


def load_run(run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu") -> LoadedRun:
    """The trained model of a finished run (best weights, eval mode), its config and data."""
    from hydra.utils import instantiate

    run_dir = Path(run_dir)
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    cfg = OmegaConf.load(cfg_path)
    ckpt = load_checkpoint(run_dir, checkpoint)
    data = instantiate(cfg.dataset, _convert_="all")
    technique = importlib.import_module(f"pdl_experiments.techniques.{cfg.technique}")
    norm = BatchNormSpec(bool(cfg.bn.enabled), str(cfg.bn.impl), float(cfg.bn.momentum), float(cfg.bn.eps))
    if hasattr(technique, "load_model"):
        model = technique.load_model(cfg, data, ckpt, norm)
    else:
        model = build_model(cfg.model, data.info, norm)
        sd = {k[len("model."):]: v for k, v in ckpt["task"].items() if k.startswith("model.")}
        load_reshaped(model, sd)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return LoadedRun(model.to(device).eval(), cfg, data, metrics, ckpt, run_dir)


def load_reshaped(model: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    """load_state_dict after resizing parameters/buffers to the recorded shapes.

    A filter-pruned model has the same modules as the dense one, with fewer channels:
    the checkpoint's tensor shapes are the record of its architecture, so the model is
    rebuilt from them rather than unpickled.
    """
    from .models.reshape import reshape_to_state_dict

    reshape_to_state_dict(model, state_dict)
    model.load_state_dict(state_dict)
    return model


def evaluate_run(run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu") -> dict:
    """Recompute a saved run's test metrics from its checkpoint (what pdl-eval prints)."""
    loaded = load_run(run_dir, checkpoint, device)
    technique = importlib.import_module(f"pdl_experiments.techniques.{loaded.cfg.technique}")
    data = loaded.data.to(device)
    if hasattr(technique, "evaluate_model"):
        return dict(technique.evaluate_model(loaded.model, data, loaded.cfg))
    from .techniques.base import classification_metrics

    test = classification_metrics(loaded.model, TensorLoader(*data.test, batch_size=1024))
    return {f"test/{k}": v for k, v in test.items()}
