"""Pruning: train -> score -> prune -> fine-tune (optionally iterated), then what it cost.

Three levels (`prune.level`), each a small class with one `prune` step:

* weight: the smallest |w| of the conv and linear weights go to zero (torch.nn.utils.prune,
  all layers at once or each alone, `prune.scope`), |w| taken as inference applies it (times
  the next BN's gamma / sqrt(var), `prune.fold_bn`: BN hides the weights' scale). Masks stay
  on through fine-tuning (pruned weights cannot revive); checkpoints store kept values plus
  a bit mask (models/sparse.py).
* filter: whole filters go, physically (Torch-Pruning: with their BN channels, the next
  layer's inputs and channels tied by residual additions), ranked by `prune.criterion`
  (l1 / l2 norm, mean activation, similarity: importance.py); the classifier keeps its outputs.
* layer: residual blocks (identity shortcut) become the identity, those whose removal hurts
  least first: validation accuracy, or `prune.criterion=discriminability` (class separation
  of the penultimate features). The control: random blocks removed instead, before
  fine-tuning and, over `prune.random_baselines` draws, fine-tuned with the same budget.

`prune.iterations=n` prunes in n rounds, each followed by fine-tuning (finetune1, ...), each
keeping the same share of what is left. A resumed run rebuilds the pruned architecture from
the checkpoint's state dict alone (`PruneTask.restore_architecture`), as `load_model` does.
Reported: accuracy before / right after pruning / after fine-tuning, parameters, non-zeros,
FLOPs (2 per multiply-accumulate), CPU latency at batch 256, checkpoint size, sparsity.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as tprune

from ..config import ConfigError
from ..data import as_float
from ..models import build_model
from ..models.common import blocks_removed, removable_blocks, weight_layers
from ..models.reshape import drop_absent_blocks, reshape_to_state_dict
from ..models.sparse import attach_masks_for, attach_packing, effective_weight, make_permanent
from ..registry import TECHNIQUES, Needs, Technique
from ..training import streams
from ..training.task import ClassificationTask
from .importance import bn_scales, classifier, filter_criteria, fisher_ratio
from .prune_from_run import check_source, source_model
from .prune_report import describe, report

log = logging.getLogger("pdl_experiments")

NEEDS = Needs(model=("image_classifier",), data=("image",))  # what it works with (config/checks.py)

DEFAULT_RATIO = {"weight": 0.9, "filter": 0.5}
# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
HEADLINE = ("prune/acc_finetuned", "prune/flops_share", "prune/latency_ratio")


# ----------------------------------------------------------------------------- the recipe
def run(ctx) -> dict[str, float]:
    level_name, ratio, n_rounds = _settings(ctx)
    level = LEVELS[level_name](ctx, ratio, n_rounds)
    source_ckpt = check_source(ctx)
    model = source_model(ctx)
    level.check(model)
    task = PruneTask(model)

    # 0. The dense model: trained here (or prune.from_run's), then measured.
    ph = ctx.phase("train")
    if not ph.done:
        if source_ckpt is None:
            ctx.fit(task, phase=ph.name)
            source_ckpt = ctx.run_dir / "checkpoints" / "best.pt"
        dense: dict[str, Any] = describe(ctx, task)  # the phase record: widths are a dict
        dense["ckpt_bytes"] = source_ckpt.stat().st_size
        dense["widths"] = {n: m.weight.shape[0] for n, m in weight_layers(model)}
        if level_name == "layer" and int(ctx.cfg.prune.random_baselines) > 0:  # what the baseline starts from
            dense["weights"] = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
        ph.finish(**dense)
        log.info(
            "before pruning: test acc %.4f, %d params, %d FLOPs",
            dense["acc"],
            dense["params"],
            dense["flops"],
        )
    dense = ph.record

    # 1. Prune, 2. fine-tune; prune.iterations rounds. Resumed inside a round, its pruning is
    # not redone: the trainer rebuilds the pruned architecture from the checkpoint.
    rounds = []
    names = ["finetune"] if n_rounds == 1 else [f"finetune{k}" for k in range(1, n_rounds + 1)]
    for k, name in enumerate(names, 1):
        ph = ctx.phase(name)
        if not ph.done:
            if not ph.resumed:
                ph.record.update(level.prune(task, k, dense))
                ph.record["acc_pruned"] = ctx.evaluate(task, "test")["test/acc"]
                log.info("round %d/%d pruned: test acc %.4f", k, n_rounds, ph.record["acc_pruned"])
            task.lr = ctx.cfg.prune.finetune_lr
            ctx.fit(task, phase=name, max_epochs=int(ctx.cfg.prune.finetune_epochs))
            ph.finish(acc_finetuned=ctx.evaluate(task, "test")["test/acc"])
            if n_rounds > 1 and ctx.logger is not None:  # the rounds' curve: prune/round/acc_*
                ctx.logger.scalars(
                    {f"prune/round/{m}": ph.record[m] for m in ("acc_pruned", "acc_finetuned")}, k
                )
        rounds.append(ph.record)

    # 3. The layer level's control: random blocks removed from the dense model instead, each
    # draw fine-tuned with the same budget as the criterion's choice.
    baselines = random_baselines(ctx, dense, rounds) if level_name == "layer" else []

    # 4. Make it permanent; what it cost and saved.
    level.finalize(task.model)
    metrics = ctx.classification_metrics(task, task.model)
    if baselines:
        metrics["prune/acc_random_finetuned"] = sum(baselines) / len(baselines)
        metrics.update({f"prune/acc_random_finetuned/{j}": a for j, a in enumerate(baselines, 1)})
    after = describe(ctx, task)
    metrics.update(report(ctx, task.model, dense, after, rounds, level_name, source_model(ctx)))
    return metrics


def random_baselines(ctx, dense: dict, rounds: list[dict]) -> list[float]:
    """Test accuracy of prune.random_baselines dense copies with as many random blocks removed
    as the criterion removed, each fine-tuned for all rounds' epochs (phases random1, ...)."""
    accs = []
    n_removed = sum(len(r.get("chosen", [])) for r in rounds)
    epochs = int(ctx.cfg.prune.finetune_epochs) * len(rounds)
    for j in range(1, int(ctx.cfg.prune.random_baselines) + 1):
        ph = ctx.phase(f"random{j}")
        if not ph.done:
            task = PruneTask(ctx.build_model())
            task.model.load_state_dict(dense["weights"])
            candidates, blocks = removable_blocks(task.model), cast(nn.ModuleList, task.model.blocks)
            gen = torch.Generator().manual_seed(int(ctx.cfg.seed) + streams.RANDOM_BLOCKS * j)
            for i in [candidates[int(t)] for t in torch.randperm(len(candidates), generator=gen)[:n_removed]]:
                blocks[i] = nn.Identity()
            task.lr = ctx.cfg.prune.finetune_lr
            ctx.fit(task, phase=ph.name, max_epochs=epochs)
            ph.finish(acc=ctx.evaluate(task, "test")["test/acc"])
            log.info("random baseline %d: test acc %.4f after fine-tuning", j, ph.record["acc"])
        accs.append(float(ph.record["acc"]))
    return accs


# ----------------------------------------------------------------------------- the task
class PruneTask(ClassificationTask):
    """Classification with an optional fine-tune learning rate; masked weights stored packed."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.lr: float | None = None  # prune.finetune_lr during fine-tuning
        attach_packing(self)

    def configure_optimizers(self, make_optimizer):
        overrides = {} if self.lr is None else {"lr": self.lr}
        return {"default": make_optimizer(self.parameters(), **overrides)}

    def restore_architecture(self, state_dict: dict) -> None:
        """Take the architecture a checkpoint was saved from, from its state dict alone:
        blocks it holds no weights of are gone, every tensor takes its shape (filter
        pruning), masks are re-attached where it holds packed weights."""
        drop_absent_blocks(self.model, state_dict, prefix="model.")
        reshape_to_state_dict(self, state_dict)
        attach_masks_for(self, state_dict)


# ----------------------------------------------------------------------------- levels
class Level:
    """One way of pruning: `prune` runs round k of n (the schedule is the level's own)."""

    def __init__(self, ctx, ratio: float, rounds: int):
        self.ctx = ctx
        self.cfg = ctx.cfg.prune
        self.ratio, self.rounds = ratio, rounds

    def keep(self, k: int) -> float:
        """Share of the original kept after round k: each round keeps the same share of what is left."""
        return (1.0 - self.ratio) ** (k / self.rounds)

    def check(self, model: nn.Module) -> None:
        """Raise ConfigError for settings this level cannot honour (before any training)."""

    def prune(self, task: PruneTask, k: int, dense: dict) -> dict[str, Any]:
        """Round k's pruning; `dense` is the record of the dense model (train phase)."""
        raise NotImplementedError

    def finalize(self, model: nn.Module) -> None:
        """Make the pruning permanent once fine-tuning is over."""


class WeightLevel(Level):
    def check(self, model):
        if str(self.cfg.criterion) not in ("l1", "l2"):
            raise ConfigError(
                f"prune.criterion={self.cfg.criterion} does not apply to prune.level=weight: "
                "expected l1 or l2 (weights are ranked by |w|)"
            )

    def prune(self, task, k, dense):
        model = task.model
        share = 1.0 - self.keep(k) / self.keep(k - 1)  # of the weights still unmasked
        params = [(m, "weight") for _, m in weight_layers(model)]
        scale = bn_scales(model, as_float(self.ctx.data.train[0][:2])) if self.cfg.fold_bn else {}
        scores = {
            (m, "weight"): _per_row(effective_weight(m).detach().abs(), scale.get(m)) for m, _ in params
        }
        # A layer pruned before holds a PruningContainer: `share` then applies to the
        # entries still unmasked.
        if str(self.cfg.scope) == "global":
            tprune.global_unstructured(
                params, pruning_method=tprune.L1Unstructured, amount=share, importance_scores=scores
            )
        else:
            for m, name in params:
                tprune.l1_unstructured(m, name, amount=share, importance_scores=scores[(m, name)])
        with torch.no_grad():
            for m, _ in params:
                # masked entries hold nothing worth keeping (both set by torch.nn.utils.prune)
                cast(torch.Tensor, m.weight_orig).mul_(cast(torch.Tensor, m.weight_mask))
        return {}

    def finalize(self, model):
        make_permanent(model)


def _per_row(w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return w if scale is None else w * scale.view(-1, *([1] * (w.dim() - 1)))


class FilterLevel(Level):
    def check(self, model):
        head = classifier(model)
        for name, m in weight_layers(model):
            width = m.weight.shape[0]
            if m is not head and int(width * (1 - self.ratio)) < 1:
                raise ConfigError(
                    f"prune.ratio={self.ratio} would remove every filter of {name} ({width} "
                    f"filters): expected prune.ratio < {1 - 1 / width:.4g} for prune.level=filter"
                )

    def prune(self, task, k, dense):
        model = task.model
        head = classifier(model)
        # Widths are targeted against the original ones, so rounding never compounds.
        widths = dense["widths"]
        ratios = {}
        for name, m in weight_layers(model):
            if m is not head:
                target = (
                    int(widths[name] * self.keep(k) + 1e-6)
                    if k == self.rounds
                    else round(widths[name] * self.keep(k))
                )
                # Torch-Pruning keeps int(width * (1 - ratio)): aim half a channel above.
                ratios[m] = max(0.0, 1.0 - (max(target, 1) + 0.5) / m.weight.shape[0])
        model.eval()  # tracing must not move BN statistics
        # random: another draw each round, the same for a seed (resumes and repeats agree)
        criteria = filter_criteria(seed=int(self.ctx.cfg.seed) + streams.PRUNE_ROUND * k)
        importance = criteria[str(self.cfg.criterion)](model, self.ctx.loader(self.ctx.data.train))
        pruner = tp.pruner.BasePruner(
            model,
            as_float(self.ctx.data.train[0][:2]),
            importance=importance,
            pruning_ratio=0.0,
            pruning_ratio_dict=ratios,
            ignored_layers=[head],
        )
        pruner.step()
        return {}


class LayerLevel(Level):
    def check(self, model):
        if str(self.cfg.criterion) not in ("l1", "accuracy", "discriminability"):
            raise ConfigError(
                f"prune.criterion={self.cfg.criterion} does not apply to prune.level=layer: expected "
                "accuracy (the default) or discriminability"
            )
        n = len(removable_blocks(model))
        if n == 0:
            raise ConfigError(
                "prune.level=layer needs a model with residual blocks (self.blocks with "
                "identity shortcuts): use model=resnet"
            )
        if int(self.cfg.blocks) > n:
            raise ConfigError(
                f"prune.blocks={self.cfg.blocks} is out of range: this model has {n} removable "
                f"blocks (identity shortcut, same shape in and out); expected 1..{n}"
            )

    def prune(self, task, k, dense):
        """Greedily drop the blocks whose removal keeps the criterion highest: validation
        accuracy (ties broken by loss), or the class separation of the features
        (`discriminability`: blocks that do not help discriminate between classes go)."""
        ctx, model = self.ctx, task.model
        total = int(self.cfg.blocks)
        n_blocks = round(total * k / self.rounds) - round(total * (k - 1) / self.rounds)
        candidates = removable_blocks(model)
        chosen: list[int] = []
        scores: dict[str, float] = {}
        for step in range(n_blocks):
            trial = {}
            for i in candidates:
                if i in chosen:
                    continue
                with blocks_removed(model, chosen + [i]):
                    if str(self.cfg.criterion) == "discriminability":
                        score = fisher_ratio(model, ctx.loader("val"))
                        trial[i] = (score, 0.0)
                    else:
                        val = ctx.evaluate(task, "val")
                        # Ties in accuracy are common on small validation sets: lower loss breaks them.
                        score, trial[i] = val["val/acc"], (val["val/acc"], -val["val/loss"])
                if step == 0:
                    scores[str(i)] = score
            log.info(
                "round %d, block %d of %d: val "
                + ("Fisher ratio" if str(self.cfg.criterion) == "discriminability" else "acc")
                + " without each block %s",
                k,
                step + 1,
                n_blocks,
                {i: round(v[0], 4) for i, v in trial.items()},
            )
            chosen.append(max(trial, key=lambda i: trial[i]))

        # The baseline: as many blocks drawn at random (seeded, so resumes agree).
        gen = torch.Generator().manual_seed(int(ctx.cfg.seed) + streams.PRUNE_ROUND * k)
        random_pick = [candidates[int(j)] for j in torch.randperm(len(candidates), generator=gen)[:n_blocks]]
        with blocks_removed(model, random_pick):
            acc_random = ctx.evaluate(task, "test")["test/acc"]
        for i in chosen:
            model.blocks[i] = nn.Identity()
        log.info("removed blocks %s (criterion) | random baseline would remove %s", chosen, random_pick)
        return {
            "chosen": chosen,
            "random": random_pick,
            "acc_random_block": acc_random,
            "val_acc_without": scores,
        }


LEVELS: dict[str, type[Level]] = {"weight": WeightLevel, "filter": FilterLevel, "layer": LayerLevel}


# ----------------------------------------------------------------------------- settings
def _settings(ctx) -> tuple[str, float, int]:
    cfg = ctx.cfg.prune
    level = str(cfg.level)
    ratio = float(cfg.ratio) if cfg.ratio is not None else DEFAULT_RATIO.get(level, 0.0)
    return level, ratio, int(cfg.iterations)


def load_model(cfg, data, ckpt: dict, norm) -> nn.Module:
    """For load_run: the pruned model of a checkpoint, masks made permanent."""
    task = PruneTask(build_model(cfg.model, data.info, norm))
    task.restore_architecture(ckpt["task"])
    task.load_state_dict(ckpt["task"])
    make_permanent(task.model)
    return task.model


TECHNIQUES.add("prune", Technique("prune", run=run, needs=NEEDS, headline=HEADLINE, load_model=load_model))
