"""Adversarial examples: white-box and black-box attacks, adversarial training as defence.

A small shift v of the input, chosen to increase the loss, changes a trained network's
prediction on purpose. The run, top to bottom:

1. `baseline` (only with adv.train=true and adv.baseline=true): a standard model, trained
   and attacked first so the numbers with and without the defence sit in one metrics.json
   (`adv/baseline/*`).
2. `train`: the target. Standard training, or with adv.train=true the course's defence
   loop: each step attack the current model (adv.attack, adv.epsilon) to get x', take the
   loss on x' (mixed with the clean loss by adv.mix) and update the weights with it. The
   epoch kept is the one with the best PGD accuracy on val, whatever the training attack
   (a weak one favours an epoch whose gradients are masked); a fall of that accuracy by
   adv.co_drop within one epoch is catastrophic overfitting, flagged (`adv/co_epoch`).
3. White-box evaluation on the test split: accuracy under grad, fgsm and pgd (with
   adv.pgd_restarts random starts, worst case per example) for every eps of adv.eval_eps
   (`adv/acc/<attack>@<eps>`, a figure of accuracy vs eps, a grid of clean vs adversarial
   images with their predictions).
4. `surrogate` (adv.blackbox=true): the attacker trains its own network of another
   architecture on a part of the training split the target never saw, with the true labels
   (adv.surrogate_data=holdout) or with labels bought by querying the target (queries);
   adversarial examples crafted on the surrogate are then fed to the target.

Success of an attack (`adv/whitebox_success@eps`, `adv/transfer_success@eps`) is the share
of the test images the target classifies correctly that it misclassifies once attacked.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..data import as_float
from ..registry import MODELS, TECHNIQUES, Needs, Technique
from ..training import streams
from ..training.task import ClassificationTask, Task, accuracy, classification_metrics
from .attacks import ATTACKS, AttackSpec, attacked_predictions, perturb, predict

log = logging.getLogger("pdl_experiments")

NEEDS = Needs(model=("image_classifier",), data=("image",))  # what it works with (config/checks.py)

# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
HEADLINE = ("adv/robust_acc/pgd", "adv/robust_acc/fgsm")


def run(ctx) -> dict[str, float]:
    cfg = ctx.cfg.adv
    surrogate_name = check(ctx)
    eps_list = sorted({float(e) for e in cfg.eval_eps} | {float(cfg.epsilon)})
    target_split, holdout = _split(ctx)
    metrics: dict[str, float] = {}

    # 1. Baseline: a standard model, trained and attacked, to compare the defence with.
    baseline: dict | None = None
    if cfg.train and cfg.baseline:
        ph = ctx.phase("baseline")
        if not ph.done:
            model = ctx.build_model()
            task = ClassificationTask(model)
            ctx.fit(task, phase=ph.name, train=ctx.train_loader(target_split))
            log.info("white-box attacks on the standard (baseline) model")
            ph.finish(
                clean_acc=ctx.evaluate(task, "test")["test/acc"],
                **whitebox(model, ctx.data.test, eps_list, cfg, _eval_bs(ctx), ctx.cfg.seed),
            )
        baseline = dict(ph.record)
        metrics.update({f"adv/baseline/{k}": v for k, v in baseline.items()})

    # 2. The target: standard training, or the course's defence loop.
    target = ctx.build_model()
    if cfg.train:
        task = AdversarialTask(
            target,
            _spec(cfg, str(cfg.attack), cfg.epsilon),
            float(cfg.mix),
            int(ctx.cfg.seed) + streams.ATTACK,
            measured_under=_spec(cfg, "pgd", cfg.epsilon),  # val/robust_acc: PGD, whatever trains
        )
    else:
        task = ClassificationTask(target)
    ph = ctx.phase("train")
    if ph.done:
        target.load_state_dict(ph.record["weights"])
    else:
        # Adversarial training keeps its best epoch by PGD val accuracy (adv.select) and
        # watches it for catastrophic overfitting.
        robust = bool(cfg.train) and str(cfg.select) == "robust"
        pick = {"monitor": "val/robust_acc", "mode": "max"} if robust else {}
        watch = CollapseWatch(float(cfg.co_drop))
        if cfg.train:
            ctx.trainer.epoch_hooks.append(watch)
        try:
            fit = ctx.fit(task, phase=ph.name, train=ctx.train_loader(target_split), **pick)
        finally:
            if cfg.train:
                ctx.trainer.epoch_hooks.remove(watch)
        # The attacked network, for the surrogate phase of a resumed run.
        ph.finish(
            weights={k: v.detach().clone() for k, v in target.state_dict().items()},
            best_epoch=fit.best_epoch,
            **(watch.summary() if cfg.train else {}),
        )
    metrics.update(ctx.classification_metrics(task, target))
    metrics["adv/best_epoch"] = float(ph.record.get("best_epoch", 0))
    for key in CollapseWatch.KEYS:
        if key in ph.record:
            metrics[f"adv/{key}"] = float(ph.record[key])

    # 3. White-box attacks on the test split.
    log.info("white-box attacks on the %s model", "adversarially trained" if cfg.train else "standard")
    wb = whitebox(target, ctx.data.test, eps_list, cfg, _eval_bs(ctx), ctx.cfg.seed)
    metrics.update({f"adv/{k}": v for k, v in wb.items()})
    if baseline is not None:
        for name in ATTACKS:
            metrics[f"adv/robust_gain/{name}"] = wb[f"robust_acc/{name}"] - baseline[f"robust_acc/{name}"]
        metrics["adv/clean_drop"] = baseline["clean_acc"] - metrics["test/acc"]

    # 4. Black-box transfer through the attacker's own surrogate.
    success = None
    if cfg.blackbox:
        success = blackbox(ctx, target, holdout, surrogate_name, eps_list)
        metrics.update(success)

    _log_pictures(ctx, target, wb, baseline, success, eps_list)
    return metrics


def whitebox(
    model: nn.Module, split, eps_list: list[float], cfg, batch_size: int, seed: int
) -> dict[str, float]:
    """Test accuracy under each attack for each eps: acc/<attack>@<eps>, robust_acc/<attack>."""
    x, y = split
    out: dict[str, float] = {}
    for name in ATTACKS:
        accs = []
        for eps in eps_list:
            preds = attacked_predictions(
                model,
                x,
                y,
                _spec(cfg, name, eps, evaluation=True),
                batch_size,
                _generator(int(seed) + streams.ATTACK, x.device),
            )
            accs.append(accuracy(preds, y).item())
            out[f"acc/{name}@{eps:g}"] = accs[-1]
        out[f"robust_acc/{name}"] = out[f"acc/{name}@{float(cfg.epsilon):g}"]
        log.info(
            "  %-4s  %s", name, "  ".join(f"eps={e:g}: {a:.3f}" for e, a in zip(eps_list, accs, strict=True))
        )
    if str(cfg.grad_normalize) != "none":
        # The course's own step x + eps * dl/dx, unscaled, beside the rescaled `grad`: its eps
        # has no fixed size (a confident model's raw gradient is tiny), which is the point.
        raw = AttackSpec("grad", 0.0, "none")
        for eps in eps_list:
            gen = _generator(int(seed) + streams.ATTACK, x.device)
            preds = attacked_predictions(model, x, y, raw.with_eps(eps), batch_size, gen)
            out[f"acc/grad_raw@{eps:g}"] = accuracy(preds, y).item()
        out["robust_acc/grad_raw"] = out[f"acc/grad_raw@{float(cfg.epsilon):g}"]
    return out


def blackbox(ctx, target: nn.Module, holdout, surrogate_name: str, eps_list: list[float]) -> dict[str, float]:
    """Train a surrogate on the attacker's data, transfer its adversarial examples to the target."""
    cfg = ctx.cfg.adv
    queries = str(cfg.surrogate_data) == "queries"
    x_h, y_h = holdout
    x_v, y_v = ctx.data.val
    if queries:
        # The "call its API" route: the attacker owns images, the target labels them.
        y_h, y_v = predict(target, x_h), predict(target, x_v)
    surrogate = ctx.build_model({"_target_": MODELS[surrogate_name].target})
    task = SurrogateTask(target, surrogate)
    ctx.fit(
        task,
        phase="surrogate",
        train=ctx.train_loader((x_h, y_h), seed_offset=1),
        val=(x_v, y_v),
        max_epochs=int(cfg.surrogate_epochs),
    )

    x, y = ctx.data.test
    clean_ok = predict(target, x) == y  # (N,) success counts among these only
    s_preds = predict(surrogate, x)
    out = {
        "adv/surrogate/test_acc": accuracy(s_preds, y).item(),
        "adv/surrogate/agreement": (s_preds == predict(target, x)).float().mean().item(),
        "adv/surrogate/train_size": float(len(y_h)),
    }
    if queries:
        out["adv/surrogate/queries"] = float(len(y_h) + len(y_v))
    bs, name, seed = _eval_bs(ctx), str(cfg.attack), int(ctx.cfg.seed) + streams.ATTACK
    log.info(
        "black-box transfer: %s crafted on a %s surrogate, evaluated on the target", name, surrogate_name
    )
    for eps in (e for e in eps_list if e > 0):
        spec = _spec(cfg, name, eps)
        white = attacked_predictions(target, x, y, spec, bs, _generator(seed, x.device))
        transfer = attacked_predictions(target, x, y, spec, bs, _generator(seed, x.device), source=surrogate)
        out[f"adv/whitebox_success@{eps:g}"] = _success(white, y, clean_ok)
        out[f"adv/transfer_success@{eps:g}"] = _success(transfer, y, clean_ok)
        log.info(
            "  eps=%g  white-box success %.3f  transfer success %.3f",
            eps,
            out[f"adv/whitebox_success@{eps:g}"],
            out[f"adv/transfer_success@{eps:g}"],
        )
    return out


# ----------------------------------------------------------------------------- tasks
class AdversarialTask(ClassificationTask):
    """The course's defence: learn from the adversarial examples of the current model."""

    def __init__(
        self,
        model: nn.Module,
        attack: AttackSpec,
        mix: float,
        seed: int,
        measured_under: AttackSpec | None = None,
    ):
        super().__init__(model)
        self.attack = attack  # what it trains on
        self.measured_under = measured_under or attack  # its robust_acc's attack (PGD in run())
        self.mix = mix
        self.seed = seed

    def training_step(self, batch, trainer):
        x, y = batch  # (B, C, H, W), (B,)
        # perturb() attacks in eval mode, so BN neither normalises x' with the statistics
        # of the batch being attacked nor folds the attack's forward passes into its
        # running statistics; the model is back in train mode for the update below.
        x_adv = perturb(self.model, x, y, self.attack)
        adv_loss, adv_logits = self.loss(x_adv, y)
        out = {"adv_loss": adv_loss, "adv_acc": accuracy(adv_logits.argmax(1), y)}
        if self.mix > 0:
            clean_loss, logits = self.loss(x, y)
            out.update(clean_loss=clean_loss, acc=accuracy(logits.argmax(1), y))
            out["loss"] = self.mix * clean_loss + (1 - self.mix) * adv_loss
        else:
            out["loss"] = adv_loss
        return out

    def evaluate(self, loader) -> dict[str, float]:
        """Clean metrics, robust_acc under `measured_under` (PGD) and, when it differs from it,
        train_attack_acc under the training attack: FGSM accuracy high while PGD's falls is
        the signature of catastrophic overfitting (masked gradients)."""
        metrics = classification_metrics(self.model, loader)
        attacks = {"robust_acc": self.measured_under}
        if self.attack != self.measured_under:
            attacks["train_attack_acc"] = self.attack
        for key, spec in attacks.items():
            gen, correct, n = None, 0, 0
            for x, y in loader:
                gen = gen or _generator(self.seed, x.device)  # the same random starts every epoch
                correct += (attacked_predictions(self.model, x, y, spec, len(y), gen) == y).sum().item()
                n += len(y)
            metrics[key] = correct / max(n, 1)
        return metrics


class CollapseWatch:
    """An epoch hook that watches val/robust_acc for catastrophic overfitting (Wong et al.
    2020): robust accuracy that falls by at least `drop` (absolute) from one epoch to the
    next. It logs a warning and remembers the first such epoch; summary() gives
    co_epoch (0: none), catastrophic_overfit (0/1), val_robust_max and val_robust_last.
    (After a resume mid-phase it has seen the epochs since the resume only.)"""

    KEYS = ("co_epoch", "catastrophic_overfit", "val_robust_max", "val_robust_last")

    def __init__(self, drop: float):
        self.drop = drop
        self.history: list[float] = []
        self.co_epoch = 0

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get("val/robust_acc")
        if value is None:
            return
        if self.history and self.history[-1] - value >= self.drop and not self.co_epoch:
            self.co_epoch = epoch
            log.warning(
                "catastrophic overfitting at epoch %d: PGD val accuracy fell from %.3f to %.3f",
                epoch,
                self.history[-1],
                value,
            )
        self.history.append(value)

    def summary(self) -> dict[str, float]:
        if not self.history:
            return {}
        return {
            "co_epoch": float(self.co_epoch),
            "catastrophic_overfit": float(self.co_epoch > 0),
            "val_robust_max": max(self.history),
            "val_robust_last": self.history[-1],
        }


class SurrogateTask(Task):
    """The attacker's own classifier, trained on what the attacker has.

    The frozen target rides along as `model` (no optimizer, never in train mode): every
    checkpoint of this phase still holds the attacked network where load_run, pdl-eval and
    a resume look for a run's model.
    """

    def __init__(self, target: nn.Module, surrogate: nn.Module):
        super().__init__()
        self.model = target
        self.surrogate = surrogate

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # only ever queried: its BN statistics must not move
        return self

    def configure_optimizers(self, make_optimizer):
        return {"default": make_optimizer(self.surrogate.parameters())}

    def training_step(self, batch, trainer):
        x, y = batch
        logits = self.surrogate(x)
        return {"loss": F.cross_entropy(logits, y), "acc": accuracy(logits.argmax(1), y)}

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        return classification_metrics(self.surrogate, loader)


# ----------------------------------------------------------------------------- pdl-eval
def evaluate_model(model: nn.Module, data, cfg) -> dict[str, float]:
    """pdl-eval: clean test accuracy and the white-box curves of a saved run's model."""
    x, y = data.test
    eps_list = sorted({float(e) for e in cfg.adv.eval_eps} | {float(cfg.adv.epsilon)})
    out = {"test/acc": accuracy(predict(model, x), y).item()}
    wb = whitebox(model, data.test, eps_list, cfg.adv, int(cfg.trainer.eval_batch_size), int(cfg.seed))
    out.update({f"adv/{k}": v for k, v in wb.items()})
    return out


# ----------------------------------------------------------------------------- helpers
def check(ctx) -> str:
    """Fail before any training on what the config types cannot catch; the surrogate's name."""
    cfg = ctx.cfg.adv
    classifiers = MODELS.names(("image_classifier",))
    name = cfg.surrogate_model
    if name is None:
        name = "cnn" if ctx.cfg.model.get("_target_") == MODELS["mlp"].target else "mlp"
    if name not in classifiers:
        raise ConfigError(f"adv.surrogate_model={name}: expected one of {', '.join(classifiers)}")
    return str(name)


def _split(ctx):
    """(target's training split, attacker's holdout): the holdout only with adv.blackbox."""
    from ..data import stratified_split

    x, y = ctx.data.train
    if not ctx.cfg.adv.blackbox:
        return (x, y), None
    held, rest = stratified_split(
        y.cpu(), (float(ctx.cfg.adv.surrogate_fraction),), int(ctx.cfg.seed) + streams.SURROGATE_SPLIT
    )
    held, rest = held.to(y.device), rest.to(y.device)
    if len(held) == 0 or len(rest) == 0:
        raise ConfigError(
            f"adv.surrogate_fraction={ctx.cfg.adv.surrogate_fraction} leaves no training "
            f"images for the {'target' if len(rest) == 0 else 'surrogate'}"
        )
    return (x[rest], y[rest]), (x[held], y[held])


def _spec(cfg, name: str, eps: float, evaluation: bool = False) -> AttackSpec:
    """The attack `name` at `eps`. evaluation=True: the test curves' PGD, with
    adv.eval_pgd_steps and adv.pgd_restarts (training and validation use adv.pgd_steps, one
    start). A fixed adv.pgd_step_size holds for both; null: 2.5 * eps / steps of each."""
    step = cfg.pgd_step_size
    steps, restarts = int(cfg.pgd_steps), 1
    if evaluation and name == "pgd":
        steps = int(cfg.eval_pgd_steps) if cfg.eval_pgd_steps is not None else steps
        restarts = int(cfg.pgd_restarts)
    return AttackSpec(
        name, float(eps), str(cfg.grad_normalize), steps, None if step is None else float(step), restarts
    )


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _eval_bs(ctx) -> int:
    return int(ctx.cfg.trainer.eval_batch_size)


def _success(preds: torch.Tensor, y: torch.Tensor, clean_ok: torch.Tensor) -> float:
    return ((preds != y) & clean_ok).float().sum().item() / max(int(clean_ok.sum()), 1)


# ----------------------------------------------------------------------------- pictures
def _log_pictures(ctx, target, wb, baseline, success, eps_list) -> None:
    if ctx.logger is None:
        return
    from .adv_figures import log_figures

    n = int(ctx.cfg.adv.grid)
    log_figures(
        ctx, wb, baseline, success, eps_list, _example_rows(ctx, target, n) if n > 0 else None, target
    )


def _example_rows(ctx, target, n: int) -> tuple[list[tuple[str, torch.Tensor]], torch.Tensor]:
    """The first n test images, clean and under each attack at adv.epsilon; their labels."""
    cfg = ctx.cfg.adv
    x, y = as_float(ctx.data.test[0][:n]), ctx.data.test[1][:n]
    rows = [("clean", x)]
    for name in ATTACKS:
        gen = _generator(int(ctx.cfg.seed) + streams.ATTACK, x.device)
        rows.append(
            (f"{name} eps={float(cfg.epsilon):g}", perturb(target, x, y, _spec(cfg, name, cfg.epsilon), gen))
        )
    return rows, y


TECHNIQUES.add(
    "adv", Technique("adv", run=run, needs=NEEDS, headline=HEADLINE, evaluate_model=evaluate_model)
)
