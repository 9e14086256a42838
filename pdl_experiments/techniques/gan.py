"""GAN: a generator against a discriminator, scored by a classifier of the same data.

The recipe, as the course gives it:
    G turns noise z ~ N(0, I) into images; D sees a batch that is half real, half G(z),
    and classifies real vs fake.
    D step: maximise log D(x) + log(1 - D(G(z)))  (binary cross-entropy, real=1, fake=0)
    G step: minimax         minimise log(1 - D(G(z)))   (saturates: no gradient while D wins)
            nonsaturating   maximise log D(G(z))        (same fixed point, strong early gradient)

Phases:
    classifier  a small CNN trained once on the same data (cached on disk, keyed by dataset
                and seed): the judge. Its penultimate layer is the feature space of the
                Frechet distance (FID computed with a digits classifier instead of
                Inception), and its predictions on generated samples show whether every
                class is produced (mode collapse leaves classes out).
    gan         the min-max game; every epoch, the judge scores samples from fixed noise
                against the val split (val/fid is the monitor: the phase ends on the
                generator with the lowest val FID) and a fixed-noise grid goes to
                TensorBoard, so the progression is visible image by image.
Finally the test split is scored, `gan.n_samples` samples are saved (samples.pt, samples.png)
and the same score on the untrained generator (gan/fid_untrained) gives the scale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..data import as_float
from ..models import BatchNormSpec, build_model, count_params
from ..models.gan import GAN
from ..registry import TECHNIQUES, Needs, Technique
from ..training.task import ClassificationTask, Task, classification_metrics

log = logging.getLogger("pdl_experiments")

NEEDS = Needs(
    model=("image_generator",),
    data=("image",),
    # trainer.devices > 1 is refused, saying why (config/checks.py)
    one_process="steps its generator and discriminator with optimizers of their own, which "
    "DistributedDataParallel (one backward per step) does not cover",
)  # what it works with, and one process only

# The judge: the zoo's SmallCNN with a 64-wide penultimate layer (the FID feature space),
# always with batch norm so `bn.enabled=false` on the GAN does not change the ruler.
JUDGE = {"_target_": "pdl_experiments.models.cnn.SmallCNN", "channels": [32, 64], "hidden": 64}
JUDGE_LR, JUDGE_BATCH = 1e-3, 64
JUDGE_VERSION = 1  # bump when the judge's recipe changes: old cache entries are ignored
COVERED_SHARE = 0.4  # a class counts as generated with >= 0.4 / num_classes of the samples
GRID = 64  # fixed-noise samples in the per-epoch grid
# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
HEADLINE = ("gan/fid", "gan/class_coverage", "gan/fid_ratio")
# Seed offsets of the noise that is scored, so the same z come back every epoch and run:
VAL_NOISE, TEST_NOISE, GRID_NOISE = 1, 2, 3  # (test noise also gives samples.pt)


# ----------------------------------------------------------------------------- the recipe
def run(ctx) -> dict[str, float]:
    check(ctx)
    cfg, seed = ctx.cfg, int(ctx.cfg.seed)
    torch.manual_seed(seed)
    gan = build_gan(cfg, ctx.data.info, ctx.norm)  # before the judge: a wrong model= fails fast

    # 1. The judge. Once the GAN phase has begun, its weights come with the GAN's checkpoint.
    ph = ctx.phase("classifier")
    judge = build_judge(ctx.data.info) if ph.done else obtain_judge(ctx, ph)
    task = GanTask(gan, judge, cfg.gan, seed).to(ctx.device)
    test_x = as_float(ctx.data.test[0])

    # 2. The min-max game, scored against the untrained generator.
    ph = ctx.phase("gan")
    if "fid_untrained" not in ph.record:
        untrained = task.sample(task.n_samples, TEST_NOISE)
        ph.record["fid_untrained"] = task.quality(test_x, untrained)["fid"]
        if ctx.logger is not None:
            ctx.logger.image("gan/real", image_grid(as_float(ctx.data.train[0][:GRID])), 0)
            ctx.logger.image("gan/samples", task.grid(), 0)  # epoch 0: the untrained G
    # Reseeded so the noise of training is the same whether the judge came from the cache.
    torch.manual_seed(seed)
    result = ctx.fit(task, phase=ph.name, train=ctx.train_loader(augment=False, seed_offset=1))

    # 3. The score on the test split, the samples kept.
    samples = task.sample(task.n_samples, TEST_NOISE)  # (N, C, H, W) in [0, 1]
    metrics = {f"gan/{k}": v for k, v in task.quality(test_x, samples).items()}
    save_samples(ctx, task, samples)
    metrics["gan/fid_untrained"] = float(ph.record["fid_untrained"])
    metrics["gan/fid_ratio"] = metrics["gan/fid"] / max(metrics["gan/fid_untrained"], 1e-12)
    # The floor: the same distance from the test images to as many *real* images as the score
    # has samples (the Frechet distance's bias depends on both set sizes, so a floor at other
    # sizes would mislead): training images, a seeded draw without replacement.
    real_x = as_float(ctx.data.train[0])
    n_real = min(task.n_samples, len(real_x))
    pick = torch.randperm(len(real_x), generator=torch.Generator().manual_seed(seed))[:n_real]
    real_r, _ = judge_outputs(task.judge, real_x[pick.to(real_x.device)])
    real_t, _ = judge_outputs(task.judge, test_x)
    metrics["gan/fid_real"] = frechet_distance(real_t, real_r)
    metrics["gan/fid_real_n"] = float(n_real)
    metrics["gan/judge_test_acc"] = classification_metrics(task.judge, ctx.loader("test"))["acc"]
    metrics["gan/best_epoch"] = result.best_epoch
    metrics["params/generator"] = count_params(task.generator)
    metrics["params/discriminator"] = count_params(task.discriminator)
    metrics["train/time_s"] = ctx.train_time_s
    return metrics


# ---------------------------------------------------------------------------------------
class GanTask(Task):
    """Both networks, both optimizers and the (frozen) judge; `forward(z)` generates."""

    manual_optimization = True

    def __init__(self, gan: GAN, judge: nn.Module, cfg: Any, seed: int):
        super().__init__()
        self.gan = gan
        self.judge = judge.requires_grad_(False).eval()
        self.loss_kind = str(cfg.loss)
        self.lr, self.beta1 = float(cfg.lr), float(cfg.beta1)
        self.n_samples = int(cfg.n_samples)
        self.seed = int(seed)

    @property
    def generator(self) -> nn.Module:
        return self.gan.generator

    @property
    def discriminator(self) -> nn.Module:
        return self.gan.discriminator

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, H, W) in [0, 1]
        return self.gan(z)

    def train(self, mode: bool = True) -> GanTask:
        super().train(mode)
        self.judge.eval()  # the ruler never changes, not even its BN statistics
        return self

    def configure_optimizers(self, make_optimizer) -> dict[str, torch.optim.Optimizer]:
        # DCGAN's Adam for both players; `optimizer.*` is not used by this technique.
        betas = (self.beta1, 0.999)
        return {
            "D": torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=betas),
            "G": torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas),
        }

    # -- the game --------------------------------------------------------------------
    def training_step(self, batch, trainer) -> dict[str, Any]:
        real, _ = batch  # (B, C, H, W) in [0, 1]; labels unused
        b = len(real)
        fake = self.generator(torch.randn(b, self.gan.latent_dim, device=real.device))
        is_real = torch.cat([torch.ones(b, device=real.device), torch.zeros(b, device=real.device)])

        # D: one batch, half real, half generated (detached: this step moves only D).
        logits = self.discriminator(torch.cat([real, fake.detach()]))  # (2B,)
        loss_d = F.binary_cross_entropy_with_logits(logits, is_real)
        trainer.optimize(loss_d, "D")

        # G: the same half/half batch, so D's batch statistics match its own step; only
        # the fake half's verdict drives G.
        fake_logits = self.discriminator(torch.cat([real, fake]))[b:]  # (B,)
        loss_g = generator_loss(fake_logits, self.loss_kind)
        trainer.optimize(loss_g, "G")

        d = torch.sigmoid(logits.detach().float())
        return {
            "loss": (loss_d + loss_g).detach(),
            "loss_D": loss_d.detach(),
            "loss_G": loss_g.detach(),
            "D_x": d[:b].mean(),
            "D_G_z": d[b:].mean(),
        }

    # -- scoring -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, noise: int) -> torch.Tensor:
        """n images (eval mode) from the noise numbered `noise` (seed + noise): a generator
        of its own, so scoring never moves the training RNG."""
        gen = torch.Generator().manual_seed(self.seed + noise)
        z = torch.randn(n, self.gan.latent_dim, generator=gen)  # (n, Z)
        was_training = self.training
        self.eval()
        try:
            return self.gan(z.to(next(self.parameters()).device)).float()  # (n, C, H, W)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def quality(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """FID between real and generated images, and how the judge classifies the fakes."""
        real_feats, _ = judge_outputs(self.judge, real)
        fake_feats, fake_logits = judge_outputs(self.judge, fake)
        return {"fid": frechet_distance(real_feats, fake_feats), **class_shares(fake_logits)}

    def evaluate(self, loader) -> dict[str, float]:
        real = torch.cat([x for x, _ in loader])
        return self.quality(real, self.sample(self.n_samples, VAL_NOISE))

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        if trainer.logger is not None:
            trainer.logger.image("gan/samples", self.grid(), epoch)
        return {}

    def grid(self) -> torch.Tensor:
        """The fixed-noise grid: the same 64 z every epoch, so images can be followed."""
        return image_grid(self.sample(GRID, GRID_NOISE))


# ---------------------------------------------------------------------------------------
def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """G's loss on D's logits for its samples (B,)."""
    if kind == "minimax":
        # minimise log(1 - D(G(z))) = -BCE(logit, "fake")
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    # non-saturating: maximise log D(G(z)), i.e. BCE against the "real" label
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def judge_outputs(judge: nn.Module, x: torch.Tensor, chunk: int = 1024):
    """Penultimate features (N, F) and logits (N, K) of the judge, in chunks."""
    head = [m for m in judge.modules() if isinstance(m, nn.Linear)][-1]
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].detach().float()))
    try:
        logits = torch.cat([judge(x[i : i + chunk]).float() for i in range(0, len(x), chunk)])
    finally:
        hook.remove()
    return torch.cat(feats).cpu(), logits.cpu()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, F), (M, F).

    tr (S_a S_b)^(1/2) equals tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), whose argument is
    symmetric positive semi-definite: two eigen-decompositions, no complex sqrtm.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (F, F)
    evals, evecs = torch.linalg.eigh(cov_a)
    root_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    fid = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(fid.item(), 0.0)


def class_shares(logits: torch.Tensor) -> dict[str, float]:
    """How the judge spreads generated samples over the classes (the mode-collapse check)."""
    k = logits.shape[1]
    probs = logits.softmax(1)
    shares = torch.bincount(probs.argmax(1), minlength=k).float() / len(probs)  # (K,)
    return {
        "class_coverage": (shares >= COVERED_SHARE / k).float().mean().item(),
        "min_class_share": shares.min().item(),
        "mean_confidence": probs.max(1).values.mean().item(),
    }


def image_grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A (C, H, W) grid; tiny images are enlarged (nearest) so TensorBoard shows pixels."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu()
    scale = max(1, 32 // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


# ---------------------------------------------------------------------------------------
class JudgeTask(ClassificationTask):
    """The judge's training: a fixed recipe (Adam 1e-3), whatever `optimizer.*` says, so
    runs that differ in their GAN settings are scored by the same kind of classifier."""

    def configure_optimizers(self, make_optimizer):
        return {"default": torch.optim.Adam(self.parameters(), lr=JUDGE_LR)}


def build_judge(info) -> nn.Module:
    return build_model(JUDGE, info, BatchNormSpec())


def judge_cache_file(ctx) -> Path:
    from omegaconf import OmegaConf

    key = {
        "dataset": OmegaConf.to_container(ctx.cfg.dataset, resolve=True),
        "seed": int(ctx.cfg.seed),
        "epochs": int(ctx.cfg.gan.classifier_epochs),
        "judge": JUDGE,
        "lr": JUDGE_LR,
        "batch_size": JUDGE_BATCH,
        "version": JUDGE_VERSION,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = ctx.cfg.gan.cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "pdl_experiments"
    name = f"gan_judge-{ctx.data.info.name}-seed{int(ctx.cfg.seed)}-{digest}.pt"
    return Path(root).expanduser() / name


def obtain_judge(ctx, phase) -> nn.Module:
    """The cached judge for this dataset and seed, or train it (phase `classifier`) and cache it."""
    from ..training.checkpoint import save_atomic

    torch.manual_seed(int(ctx.cfg.seed))  # the judge does not depend on what ran before
    judge = build_judge(ctx.data.info).to(ctx.device)
    path = judge_cache_file(ctx)
    if not phase.resumed and path.is_file():
        try:
            cached = torch.load(path, map_location=ctx.device, weights_only=True)
            judge.load_state_dict(cached["model"])
            log.info("judge classifier from cache %s", path)
            phase.finish()
            return judge
        except Exception as e:
            log.warning("ignoring unreadable judge cache %s (%s)", path, e)
    task = JudgeTask(judge)
    ctx.fit(
        task,
        phase=phase.name,
        train=ctx.train_loader(augment=False, batch_size=JUDGE_BATCH),
        max_epochs=int(ctx.cfg.gan.classifier_epochs),
        monitor="val/acc",
        mode="max",
    )
    phase.finish()
    try:
        save_atomic({"model": judge.state_dict(), "version": JUDGE_VERSION}, path)
    except OSError as e:
        log.warning("cannot cache the judge classifier at %s (%s); set gan.cache_dir", path, e)
    return judge


def build_gan(cfg, info, norm: BatchNormSpec) -> GAN:
    import inspect

    from hydra.utils import get_object

    target = str(cfg.model.get("_target_"))
    takes_noise = "latent_dim" in inspect.signature(get_object(target)).parameters
    gan = build_model(cfg.model, info, norm, latent_dim=int(cfg.gan.latent_dim)) if takes_noise else None
    if not isinstance(gan, GAN):
        raise ConfigError(
            f"model={target.rsplit('.', 1)[-1]} is not a GAN model: technique=gan "
            "needs model=gan_mlp or model=dcgan"
        )
    return gan


def check(ctx) -> None:
    info = ctx.data.info  # image data: NEEDS, checked before the run
    if info.num_classes < 2:
        raise ConfigError(
            f"technique=gan needs a labelled image dataset (the judge is a classifier); "
            f"dataset {info.name} has {info.num_classes} class"
        )


def save_samples(ctx, task: GanTask, samples: torch.Tensor) -> None:
    """samples.pt (tensor, weights_only-loadable), samples.png, and a per-class picture."""
    from torchvision.utils import save_image

    samples = samples.cpu()
    torch.save(samples.contiguous(), ctx.run_dir / "samples.pt")
    save_image(image_grid(samples[:100], nrow=10), ctx.run_dir / "samples.png")
    if ctx.logger is None:
        return
    _, logits = judge_outputs(task.judge, samples.to(ctx.device))  # on the CPU
    pred = logits.argmax(1)
    k = logits.shape[1]
    ctx.logger.image("gan/samples_by_class", by_class_grid(samples, pred, k), 0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = torch.bincount(pred, minlength=k).float() / len(pred)
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.bar(range(k), shares.numpy())
    ax.axhline(COVERED_SHARE / k, color="red", linestyle="--", label=f"{COVERED_SHARE / k:.0%}: covered")
    ax.set_xticks(range(k), ctx.data.info.class_names or [str(i) for i in range(k)])
    ax.set_xlabel("class assigned by the judge")
    ax.set_ylabel("share of samples")
    ax.legend()
    ctx.logger.figure("gan/class_shares", fig, 0)


def by_class_grid(samples: torch.Tensor, pred: torch.Tensor, k: int, per_class: int = 10):
    """Row c: up to `per_class` samples the judge calls class c (blank where G makes none)."""
    rows = torch.ones(k, per_class, *samples.shape[1:])
    for c in range(k):
        picked = samples[pred == c][:per_class]
        rows[c, : len(picked)] = picked
    return image_grid(rows.flatten(0, 1), nrow=per_class)


# ---------------------------------------------------------------------------------------
def load_model(cfg, data, ckpt: dict, norm: BatchNormSpec) -> GanTask:
    """For load_run: the GanTask (generator, discriminator, judge); `model(z)` generates,
    `model.sample(n, seed)` draws n images, `model.generator` is G alone."""
    from ..training.checkpoint import CheckpointError

    state = ckpt["task"]
    if not any(k.startswith("gan.generator.") for k in state):
        raise CheckpointError(
            "this checkpoint holds no generator (the run stopped in the "
            "classifier phase): resume it with trainer.resume=<run dir>"
        )
    task = GanTask(build_gan(cfg, data.info, norm), build_judge(data.info), cfg.gan, int(cfg.seed))
    task.load_state_dict(state)
    return task.eval()


def evaluate_model(model: GanTask, data, cfg) -> dict[str, float]:
    """pdl-eval: the test FID and class shares again, on the same noise as the run."""
    fake = model.sample(model.n_samples, TEST_NOISE)
    return {f"gan/{k}": v for k, v in model.quality(as_float(data.test[0]), fake).items()}


TECHNIQUES.add(
    "gan",
    Technique(
        "gan", run=run, needs=NEEDS, headline=HEADLINE, load_model=load_model, evaluate_model=evaluate_model
    ),
)
