"""The typed schema of a run (`RunConfig`), `typed()` and `ConfigError`.

`configs/base.yaml`, the first entry of the primary config's defaults, holds every key of
`RunConfig` with its default, generated from this module (a test keeps the two in sync;
regenerate with `python -m pdl_experiments.config`). So a typo (`trainer.max_epoch=3`)
fails while Hydra composes the config: the composed config is in struct mode. At the very
start of a run, before any data is loaded, `typed()` merges the composed config onto
`RunConfig`: a wrong type (`trainer.max_epochs=abc`) or a value outside an enum fails there
with one line naming the key, and `ranges.validate()` checks the ranges a type cannot express
(a ratio in [0, 1), epochs >= 1). Typing at run time rather than at composition keeps
`pdl-run --cfg job` and `--help` fast (no structured config to build) and lets one bad job
of a sweep fail alone.

This module must stay cheap to import: `pdl-run --help` and `pdl-run --cfg job` must not
pay for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, cast

from omegaconf import MISSING, DictConfig

from ..errors import PdlError


class StrEnum(str, Enum):
    """An enum whose members compare equal to their names: `cfg.trainer.device == "cpu"`."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.value)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class MonitorMode(StrEnum):
    max = "max"
    min = "min"


class ProgressMode(StrEnum):
    auto = "auto"  # rich bars on a terminal, plain lines otherwise
    rich = "rich"
    plain = "plain"
    none = "none"


class OnDivergence(StrEnum):
    fail = "fail"  # the job fails (status failed): a claim over it is incomplete
    chance = "chance"  # the job finishes with run/diverged=1 and its accuracies at chance


class BNImpl(StrEnum):
    torch = "torch"  # nn.BatchNorm
    course = "course"  # the hand-written layer following the course's formulas


class PruneLevel(StrEnum):
    weight = "weight"
    filter = "filter"
    layer = "layer"


# OmegaConf matches enum members by name, and `global` is a Python keyword: functional API.
# Spelled Enum(..., type=StrEnum) (the same class as StrEnum(...): bases StrEnum, str, Enum)
# because mypy understands the functional API only when called on enum.Enum itself.
PruneScope = Enum("PruneScope", [("global", "global"), ("layer", "layer")], type=StrEnum)


class PruneCriterion(StrEnum):
    l1 = "l1"
    l2 = "l2"
    activation = "activation"
    similarity = "similarity"
    random = "random"  # filter level: the control, filters drawn at random (seeded)
    accuracy = "accuracy"  # layer level: validation accuracy without the block
    discriminability = "discriminability"  # layer level: class separation of the features without it


class Attack(StrEnum):
    grad = "grad"
    fgsm = "fgsm"
    pgd = "pgd"
    fgsm_rs = "fgsm_rs"  # FGSM from a random start, step 1.25 eps (Wong et al. 2020): training only


class AdvSelect(StrEnum):
    """Which validation accuracy picks adversarial training's best epoch."""

    robust = "robust"  # under PGD at adv.epsilon (val/robust_acc), whatever the training attack
    clean = "clean"  # the trainer's monitor (val/acc)


class SurrogateData(StrEnum):
    holdout = "holdout"  # the attacker has labelled data of its own (a held-out part of train)
    queries = "queries"  # the attacker has images only and labels them by querying the target


class GradNorm(StrEnum):
    """Per-sample rescaling of the gradient in the `grad` attack x' = x + eps * g."""

    none = "none"  # the raw gradient, as taught: eps has no fixed meaning
    linf = "linf"  # g / max|g|: the largest pixel change is eps
    l2 = "l2"  # g * sqrt(D) / ||g||_2: the L2 length of an FGSM step of size eps


class GanLoss(StrEnum):
    nonsaturating = "nonsaturating"
    minimax = "minimax"


class AttentionScore(StrEnum):
    dot = "dot"
    additive = "additive"


class NasBaseline(StrEnum):
    none = "none"  # the DARTS search
    random = "random"  # one random genotype, no search
    random_search = "random_search"  # the best of random genotypes on the DARTS search's compute


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 1024
    device: Device = Device.auto
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # GPU speed switches (training/speed.py), off by default; both work on the CPU too:
    channels_last: bool = False  # the networks and their image inputs in NHWC memory format
    compile: bool = False  # torch.compile each network of the task (checkpoints unchanged)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    monitor: str = "val/acc"
    mode: MonitorMode = MonitorMode.max
    early_stopping_patience: int = 0  # epochs without improvement; 0 = off
    # A non-finite loss or weights: fail the job, or (chance) end it as a finished run with
    # run/diverged=1 and test/acc, val/acc = 1 / num_classes (a sweep then counts it, e.g. a
    # learning rate too high, instead of dropping it); every run then reports run/diverged.
    on_divergence: OnDivergence = OnDivergence.fail
    log_every_n_steps: int = 50
    # last.pt is written at the end of every phase, on SIGINT/SIGTERM and at most every
    # checkpoint_interval_s seconds in between: on tiny data a save per epoch would cost
    # more than the epoch itself.
    checkpoint_interval_s: float = 60.0
    keep: int = 0  # extra per-epoch snapshots kept besides last.pt and best.pt
    resume: str | None = None  # a checkpoint file or a run directory
    progress: ProgressMode = ProgressMode.auto
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    deterministic: bool = False
    # Debugging (configs/debug/). A batch limit is a count when it is a whole number >= 1
    # (1 = one batch) and a share of the batches when it lies in (0, 1); null = all of them.
    # Training: the first batches of each (shuffled) epoch, in every phase. Val and test: the
    # first batches of eval_batch_size of the split, for everything that scores it.
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    limit_test_batches: float | None = None
    overfit_batches: int = 0  # train on the first N batches only, in order, un-augmented; 0 = off
    profiler: bool = False  # torch.profiler over steps 4-8: profile_trace.json, an operator table
    # Processes on this machine training one model with DistributedDataParallel (gloo on the
    # CPU, NCCL on CUDA: one GPU each), started by pdl-run; under torchrun / SLURM the launcher
    # decides. batch_size stays the global batch (each process takes batch_size / devices).
    devices: int = 1
    sync_bn: bool = False  # under DDP: BatchNorm statistics over the global batch (CUDA only)


@dataclass
class AugmentationConfig:
    """The course's five operations; each is off at its neutral value."""

    crop_scale: float = 1.0  # RandomResizedCrop lower scale bound; 1.0 = off
    mirror: float = 0.0  # probability of a horizontal flip
    saturation: float = 0.0  # ColorJitter saturation strength (colour images only)
    rotation: float = 0.0  # max degrees of a random rotation
    brightness: float = 0.0  # ColorJitter brightness (luminosity) strength
    grid: bool = True  # log a grid of augmented training images to TensorBoard


@dataclass
class BNConfig:
    enabled: bool = True
    impl: BNImpl = BNImpl.torch
    momentum: float = 0.1  # weight of the batch statistic: 0.9 * old + 0.1 * batch
    eps: float = 1e-5  # added to the variance before the square root
    # Each epoch, on a fixed batch of probe_size training images: gradient norm and input
    # mean/std per weight layer, pre-activation histograms (TensorBoard; end values in
    # metrics.json). Measured without side effects on training (BN buffers, RNG restored).
    diagnostics: bool = True
    probe_size: int = 64  # a training batch's worth: BN sees the batch statistics it trains with


@dataclass
class PruneConfig:
    level: PruneLevel = PruneLevel.weight
    # weight: share of conv/linear weights zeroed; filter: share of each layer's filters
    # removed. None: 0.9 for weight, 0.5 for filter (unused at layer level).
    ratio: float | None = None
    scope: PruneScope = PruneScope["global"]  # weight level: rank all layers together or each alone
    # weight level: rank |w| times the next BN's gamma/sqrt(var), the weight inference
    # applies (BN hides a layer's weight scale); false: raw |w|
    fold_bn: bool = True
    # filter level: l1 | l2 | activation | similarity | random; weight level: l1 | l2 (= |w|); layer
    # level: accuracy | discriminability (l1, the default, means accuracy there)
    criterion: PruneCriterion = PruneCriterion.l1
    iterations: int = 1  # prune -> fine-tune rounds; each keeps the same share of what is left
    blocks: int = 1  # layer level: residual blocks removed
    from_run: str | None = None  # start from this run's best weights instead of training
    finetune_epochs: int = 15  # per round
    finetune_lr: float | None = None  # None: optimizer.lr
    latency_repeats: int = 20  # CPU latency at batch 256: median of this many timings
    # layer level: the random-block baseline, fine-tuned with the same budget, over this many
    # random draws (prune/acc_random_finetuned is their mean); 0 = before fine-tuning only
    random_baselines: int = 3


@dataclass
class AdvConfig:
    attack: Attack = Attack.fgsm  # used by adversarial training and the transfer attack
    epsilon: float = 0.1  # pixel units (images are in [0, 1]); L-inf radius for fgsm/pgd
    eval_eps: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    grad_normalize: GradNorm = GradNorm.linf
    pgd_steps: int = 10
    pgd_step_size: float | None = None  # None: 2.5 * eps / steps
    # The evaluation's PGD (test curves, adv/robust_acc/pgd): steps (null: pgd_steps) and
    # random starts, the worst case over them kept per example. Training and the per-epoch
    # validation that picks the kept epoch use pgd_steps and one start.
    eval_pgd_steps: int | None = None
    pgd_restarts: int = 1
    train: bool = False  # adversarial training (the defence)
    mix: float = 0.0  # weight of the clean loss in adversarial training
    select: AdvSelect = AdvSelect.robust  # adversarial training's best epoch: robust or clean val acc
    # Catastrophic overfitting (Wong et al. 2020): flagged when the robust (PGD) val accuracy
    # falls by at least co_drop (absolute) from one epoch to the next (adv/co_epoch).
    co_drop: float = 0.2
    baseline: bool = True  # with adv.train: also train a standard model, adv/baseline/* keys
    blackbox: bool = False
    surrogate_data: SurrogateData = SurrogateData.holdout
    surrogate_model: str | None = None  # a model-zoo name; None: mlp (cnn for an mlp target)
    surrogate_fraction: float = 0.5  # share of train held out from the target for the attacker
    surrogate_epochs: int = 20
    grid: int = 8  # test images in the clean-vs-adversarial figure; 0 = none


@dataclass
class GanConfig:
    loss: GanLoss = GanLoss.nonsaturating
    latent_dim: int = 64
    n_samples: int = 1000
    lr: float = 2e-4  # Adam, both networks (DCGAN)
    beta1: float = 0.5
    classifier_epochs: int = 20  # the judge behind gan/fid and gan/class_coverage
    cache_dir: str | None = None  # where the judge is cached; None: ~/.cache/pdl_experiments


class NasOp(StrEnum):
    """DARTS candidate operations (pdl_experiments/models/darts.py builds each)."""

    conv_3x3 = "conv_3x3"
    conv_5x5 = "conv_5x5"
    dil_conv_3x3 = "dil_conv_3x3"
    sep_conv_3x3 = "sep_conv_3x3"
    max_pool_3x3 = "max_pool_3x3"
    avg_pool_3x3 = "avg_pool_3x3"
    skip_connect = "skip_connect"
    none = "none"  # the zero op: lets the search switch an edge off


@dataclass
class NasConfig:
    ops: list[NasOp] = field(
        default_factory=lambda: [
            NasOp.conv_3x3,
            NasOp.conv_5x5,
            NasOp.dil_conv_3x3,
            NasOp.max_pool_3x3,
            NasOp.avg_pool_3x3,
            NasOp.skip_connect,
            NasOp.none,
        ]
    )
    nodes: int = 3  # intermediate nodes per cell (plus 2 input nodes)
    cells: int = 2
    channels: int = 16
    search_epochs: int = 10
    retrain_epochs: int = 20
    # Adam on alpha, betas (0.5, 0.999), weight decay 1e-3. DARTS' 3e-4 is for ~20k steps;
    # a 10-epoch search of the digits makes ~100, so alpha needs bigger ones to move.
    arch_lr: float = 3e-2
    second_order: bool = False  # unrolled (second-order) alpha gradient
    # Its virtual step's size; null: the weight optimizer's current lr (DARTS' xi = eta_w).
    # Weights on Adam at 2e-3 (optimizer=adam) make the second-order term small: DARTS' 0.025 is its SGD lr.
    xi: float | None = None
    baseline: NasBaseline = NasBaseline.none  # random: skip the search, random genotype
    # baseline=random_search: random genotypes each trained this many epochs on the search's
    # weight half and scored on its other half; as many as fit in the FLOPs the DARTS search
    # of this config would spend (candidates: null), or exactly `candidates` of them
    candidate_epochs: int = 5
    candidates: int | None = None
    # Retrain the derived network at the channel count whose parameters come nearest this
    # (searched and random genotypes then compare at equal size); null: nas.channels
    param_budget: int | None = None


@dataclass
class AttentionConfig:
    score: AttentionScore = AttentionScore.dot
    heatmaps: int = 4


@dataclass
class TensorBoardLoggerConfig:
    enabled: bool = False  # on through configs/logger/tensorboard.yaml, the default option


@dataclass
class CsvLoggerConfig:
    enabled: bool = False  # <run dir>/metrics.csv: one row per logged step, one column per scalar


@dataclass
class MlflowLoggerConfig:
    enabled: bool = False  # needs the `tracking` extra: pip install -e ".[tracking]"
    # A local SQLite store by default (relative to the working directory, like outputs/);
    # `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` opens it.
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "pdl-experiments"


@dataclass
class LoggerConfig:
    """Where a run's scalars go. The `logger` group switches these on, one option or several
    (`logger=[tensorboard,mlflow]`); images, figures and histograms go to TensorBoard only."""

    tensorboard: TensorBoardLoggerConfig = field(default_factory=TensorBoardLoggerConfig)
    csv: CsvLoggerConfig = field(default_factory=CsvLoggerConfig)
    mlflow: MlflowLoggerConfig = field(default_factory=MlflowLoggerConfig)


@dataclass
class RunConfig:
    model: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] | None = None
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    technique: str = MISSING
    seed: int = 0
    bn: BNConfig = field(default_factory=BNConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    nas: NasConfig = field(default_factory=NasConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # A preset sweep's claim (configs/experiment/*.yaml): what it says, its paired comparisons,
    # its figure, the published number beside ours. Read by the sweep's report
    # (pdl_experiments/sweeps/claims.py); a run ignores it.
    claim: Any = None


class ConfigError(PdlError, ValueError):
    """A bad value in a composed config; its message is one line naming the key."""


def base_yaml_path() -> Path:
    """Where configs/base.yaml lives: the source checkout's configs/ (editable or not) or the
    installed package's pdl_experiments/configs/."""
    from importlib.resources import files

    return Path(str(files("pdl_experiments.configs") / "base.yaml"))


BASE_HEADER = (
    "# GENERATED from RunConfig in pdl_experiments/config/schema.py: every key of a run with its\n"
    "# default. Do not edit; regenerate with `python -m pdl_experiments.config`.\n"
)


def base_yaml() -> str:
    """The text of configs/base.yaml: RunConfig's defaults as plain YAML."""
    from omegaconf import OmegaConf

    return BASE_HEADER + OmegaConf.to_yaml(OmegaConf.structured(RunConfig))


def typed(cfg: DictConfig) -> DictConfig:
    """cfg merged onto RunConfig: types converted and checked, enums validated.

    Raises ConfigError naming the key, e.g. `trainer.max_epochs=abc: Value 'abc' of type
    'str' could not be converted to Integer`.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    src = cfg
    if "hydra" in cfg:  # a config composed with return_hydra_config=True
        src = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    try:
        out = OmegaConf.merge(OmegaConf.structured(RunConfig), src)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        value = OmegaConf.select(src, key, default=None, throw_on_missing=False) if key != "config" else None
        msg = str(e).splitlines()[0].strip() if str(e).strip() else type(e).__name__
        shown = f"{key}={value}" if value is not None and not isinstance(value, (dict, list)) else key
        raise ConfigError(f"{shown}: {msg}") from None
    return cast(DictConfig, out)  # merged onto a structured DictConfig: a DictConfig


_BATCH_LIMIT = "a count of batches (a whole number >= 1), a share in (0, 1), or null (all)"


def _batch_limit(v: float) -> bool:
    return 0 < v < 1 or (v >= 1 and float(v).is_integer())


def write_base_yaml() -> Path:
    """python -m pdl_experiments.config: rewrite configs/base.yaml from RunConfig."""
    path = base_yaml_path()
    path.write_text(base_yaml())
    return path
