"""Range checks of a typed run config (schema.py types it): one line naming the key.

`_RANGES` covers the fixed sections (trainer, augmentation, the techniques); `_OPTION_RANGES`
the options of the `_target_` groups (model, dataset, optimizer, scheduler) by name,
wherever they appear, so a user's own model or optimizer is checked the same way.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .schema import _BATCH_LIMIT, ConfigError, _batch_limit

# (key, predicate, what is allowed). Checked before any work starts.
_RANGES: list[tuple[str, Any, str]] = [
    ("trainer.max_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.eval_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.grad_clip", lambda v: v >= 0, "a number >= 0 (0 = off)"),
    ("trainer.early_stopping_patience", lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    ("trainer.log_every_n_steps", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.checkpoint_interval_s", lambda v: v >= 0, "a number of seconds >= 0"),
    ("trainer.keep", lambda v: v >= 0, "an integer >= 0"),
    ("trainer.num_threads", lambda v: v >= 0, "an integer >= 0 (0 = torch's default)"),
    ("trainer.limit_train_batches", _batch_limit, _BATCH_LIMIT),
    ("trainer.limit_val_batches", _batch_limit, _BATCH_LIMIT),
    ("trainer.limit_test_batches", _batch_limit, _BATCH_LIMIT),
    ("trainer.overfit_batches", lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    ("trainer.devices", lambda v: v >= 1, "an integer >= 1 (processes on this machine, one per device)"),
    ("augmentation.crop_scale", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("augmentation.mirror", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("augmentation.saturation", lambda v: v >= 0, "a number >= 0"),
    ("augmentation.rotation", lambda v: 0 <= v <= 180, "degrees in [0, 180]"),
    ("augmentation.brightness", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("bn.momentum", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("bn.eps", lambda v: v > 0, "a number > 0"),
    ("bn.probe_size", lambda v: v >= 2, "an integer >= 2 (training images in the diagnostics batch)"),
    ("prune.ratio", lambda v: v is None or 0 <= v < 1, "a number in [0, 1)"),
    ("prune.iterations", lambda v: v >= 1, "an integer >= 1"),
    ("prune.blocks", lambda v: v >= 1, "an integer >= 1"),
    ("prune.finetune_epochs", lambda v: v >= 0, "an integer >= 0"),
    ("prune.finetune_lr", lambda v: v > 0, "a number > 0 (or null: optimizer.lr)"),
    ("prune.latency_repeats", lambda v: v >= 1, "an integer >= 1"),
    ("prune.random_baselines", lambda v: v >= 0, "an integer >= 0 (0 = no fine-tuned baseline)"),
    ("adv.epsilon", lambda v: 0 <= v <= 1, "a number in [0, 1] (pixels are in [0, 1])"),
    ("adv.eval_eps", lambda v: all(0 <= e <= 1 for e in v), "numbers in [0, 1] (pixels are in [0, 1])"),
    ("adv.pgd_steps", lambda v: v >= 1, "an integer >= 1"),
    ("adv.eval_pgd_steps", lambda v: v >= 1, "an integer >= 1 (or null: adv.pgd_steps)"),
    ("adv.pgd_restarts", lambda v: v >= 1, "an integer >= 1"),
    ("adv.co_drop", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("adv.mix", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("adv.pgd_step_size", lambda v: v > 0, "a number > 0 (or null: 2.5 * eps / steps)"),
    ("adv.surrogate_fraction", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("adv.surrogate_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("adv.grid", lambda v: v >= 0, "an integer >= 0 (0 = no figure)"),
    ("gan.latent_dim", lambda v: v >= 1, "an integer >= 1"),
    ("gan.n_samples", lambda v: v >= 2, "an integer >= 2"),
    ("gan.lr", lambda v: v > 0, "a number > 0"),
    ("gan.beta1", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("gan.classifier_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("nas.nodes", lambda v: v >= 1, "an integer >= 1"),
    ("nas.cells", lambda v: v >= 1, "an integer >= 1"),
    ("nas.search_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("nas.retrain_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("nas.ops", lambda v: len(v) >= 1, "a non-empty list of operations"),
    ("nas.channels", lambda v: v >= 1, "an integer >= 1"),
    ("nas.arch_lr", lambda v: v > 0, "a number > 0"),
    ("nas.xi", lambda v: v is None or v >= 0, "null (the weight optimizer's lr) or a number >= 0"),
    ("nas.candidate_epochs", lambda v: v >= 1, "an integer >= 1"),
    (
        "nas.candidates",
        lambda v: v is None or v >= 1,
        "null (as many as the search's FLOPs) or an integer >= 1",
    ),
    ("nas.param_budget", lambda v: v is None or v >= 1, "null (nas.channels) or an integer >= 1"),
    ("attention.heatmaps", lambda v: v >= 0, "an integer >= 0 (test examples shown; 0 = none)"),
]


# The options of the `_target_` groups, by name, wherever they appear (model.hidden,
# dataset.val_fraction, optimizer.lr, scheduler.step_size, ...): one table for every model,
# loader, optimizer and scheduler, the project's and a user's.
_TARGET_GROUPS = ("model", "dataset", "optimizer", "scheduler")


def _counts(v) -> bool:
    items = v if isinstance(v, (list, tuple)) else [v]
    return len(items) >= 1 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in items)


_OPTION_RANGES: dict[str, tuple[Any, str]] = {
    name: (_counts, "integers >= 1 (a non-empty list where a list is expected)")
    for name in (
        "hidden",
        "channels",
        "width",
        "depth",
        "layers",
        "heads",
        "d_model",
        "d_ff",
        "embed",
        "blocks_per_stage",
        "image_size",
        "length",
        "n_train",
        "n_val",
        "n_test",
        "subset",
        "min_length",
        "stem_stride",
    )
}
_OPTION_RANGES.update(
    {
        "dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "init_std": (lambda v: v > 0, "a number > 0"),
        "val_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
        "test_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
        "vocab": (lambda v: v >= 2, "an integer >= 2"),
        "num_classes": (lambda v: v >= 2, "an integer >= 2"),
        "noise": (lambda v: v >= 0, "a number >= 0"),
        "workers": (lambda v: v >= 0, "an integer >= 0 (0 = decode in the training process)"),
        "memory_budget_mb": (lambda v: v > 0, "a number of MB > 0"),
        # optimizers (torch.optim.*) and LR schedulers (torch.optim.lr_scheduler.*)
        "lr": (lambda v: v > 0, "a number > 0"),
        "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
        "weight_decay": (lambda v: v >= 0, "a number >= 0"),
        "eps": (lambda v: v > 0, "a number > 0"),
        "step_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1 (epochs between decays)"),
        "gamma": (lambda v: 0 < v <= 1, "a number in (0, 1] (the factor the rate is multiplied by)"),
        "T_max": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1 (epochs of the half cosine)"),
        "eta_min": (lambda v: v >= 0, "a number >= 0"),
        "layout": (
            lambda v: len(v) >= 1 and all(i == "M" or (isinstance(i, int) and i >= 1) for i in v),
            "a non-empty list of integers >= 1 and M (max-pool)",
        ),
    }
)


def _check_options(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    for group in _TARGET_GROUPS:
        block = cfg.get(group)
        if not OmegaConf.is_dict(block):
            continue
        for name, (ok, allowed) in _OPTION_RANGES.items():
            value = OmegaConf.select(block, name, default=None)
            if value is None:
                continue
            value = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
            _require(f"{group}.{name}", value, ok, allowed)
        fractions = [OmegaConf.select(block, k, default=None) for k in ("val_fraction", "test_fraction")]
        if all(isinstance(f, (int, float)) for f in fractions) and sum(fractions) >= 1:
            raise ConfigError(
                f"{group}.val_fraction + {group}.test_fraction = {sum(fractions):g}: expected < 1 "
                "(the rest is the training split)"
            )
        heads, d_model = (
            OmegaConf.select(block, "heads", default=None),
            OmegaConf.select(block, "d_model", default=None),
        )
        if isinstance(heads, int) and isinstance(d_model, int) and d_model % heads:
            raise ConfigError(
                f"{group}.heads={heads} does not divide {group}.d_model={d_model}: expected a divisor "
                f"such as {', '.join(str(h) for h in range(1, d_model + 1) if d_model % h == 0)}"
            )
        lengths = (
            OmegaConf.select(block, "min_length", default=None),
            OmegaConf.select(block, "length", default=None),
        )
        if isinstance(lengths[0], int) and isinstance(lengths[1], int) and lengths[0] > lengths[1]:
            raise ConfigError(
                f"{group}.min_length={lengths[0]} is out of range: expected <= {group}.length={lengths[1]}"
            )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) for the first missing or out-of-range value."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} is not set and has no default: set it on the command line, "
            f"e.g. {missing[0]}=<value>"
            + (" (the image folder: <dir>/<class>/<image>)" if missing[0] == "dataset.root" else "")
        )
    for key, ok, allowed in _RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and not key.startswith("prune.ratio"):
            continue
        _require(key, value, ok, allowed)
    _check_options(cfg)


def _require(key: str, value: Any, ok: Any, allowed: str) -> None:
    """ConfigError (one line naming the key) unless `ok(value)`."""
    try:
        good = ok(value)
    except TypeError:
        good = False
    if not good:
        raise ConfigError(f"{key}={value} is out of range: expected {allowed}")
