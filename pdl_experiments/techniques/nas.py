"""NAS: differentiable architecture search (DARTS), then retrain the derived network.

    search   every edge of a cell DAG is a softmax(alpha)-weighted sum of candidate ops
             (models/darts.py). The network weights w learn on one half of the training
             split, alpha on the other half, in alternating first-order steps (or DARTS'
             unrolled second-order step, nas.second_order=true). alpha is logged every
             epoch: a heatmap of the op weights per edge, the entropy of each edge's op
             distribution (it falls as the search commits), the op shares.
    derive   per intermediate node keep the 2 incoming edges whose strongest non-none op
             is strongest, each with that op: the genotype (printed, genotype.json).
             Skip connections are counted: DARTS is known to collapse towards them.
    retrain  the discrete network of the genotype, trained from scratch on the whole
             training split with the shared trainer.

Baselines of the same space: nas.baseline=random retrains one random genotype (no search);
nas.baseline=random_search retrains the best of random genotypes trained on the DARTS
search's data and FLOPs (nas_baselines.py). nas.param_budget retrains every genotype at the
channel count that gives it that many parameters, so cells compare at equal size.
The search phase records the genotype (kept in every later checkpoint), so a run killed
while retraining rebuilds the derived network and goes on without searching again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import cast

import torch
import torch.nn.functional as F

from .. import figures
from ..config import ConfigError
from ..data import TensorLoader
from ..loading import submodule_state
from ..models.darts import (
    Cell,
    DerivedNetwork,
    Genotype,
    SearchNetwork,
    channels_for_params,
    derive_genotype,
    edge_inputs,
    format_genotype,
    node_name,
    random_genotype,
    skip_count,
)
from ..registry import TECHNIQUES, Needs, Technique
from ..training import streams
from ..training.checkpoint import CheckpointError
from ..training.task import ClassificationTask, Task, accuracy, classification_metrics
from .nas_baselines import random_search, search_flops, split_halves

log = logging.getLogger("pdl_experiments")

NEEDS = Needs(
    model=None,  # builds its own network: no model group (config/checks.py)
    data=("image",),
    # trainer.devices > 1 is refused, saying why (config/checks.py)
    one_process="steps the architecture and the weights with optimizers of their own (DARTS), "
    "which DistributedDataParallel (one backward per step) does not cover",
)
# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
HEADLINE = ("nas/skip_count",)


# -- the recipe ------------------------------------------------------------------------------
def run(ctx) -> dict[str, float]:
    ops = check(ctx)
    nas = ctx.cfg.nas
    # 1. Search (or draw a random genotype of the same space), 2. derive the genotype.
    ph = ctx.phase("search")
    # Both searches see the training split only: w learns on one half, alpha (or the
    # choice among random candidates) is made on the other.
    x_train, y_train = ctx.data.train
    halves = split_halves(x_train, y_train, int(ctx.cfg.seed))
    if ph.done:
        log.info("genotype from the checkpoint, no search needed")
    elif str(nas.baseline) == "random":
        gen = torch.Generator().manual_seed(int(ctx.cfg.seed))
        ph.finish(genotype=random_genotype(ops, int(nas.nodes), gen), genotype_source="random")
    elif str(nas.baseline) == "random_search":
        random_search(ctx, ph, ops, halves, budget=search_flops(ctx, ops, *halves, SearchTask))
    else:
        search(ctx, ph, ops, halves)
    found = ph.record
    genotype = found["genotype"]
    save_genotype(ctx, found, ops)

    # 3. Retrain the derived network from scratch (at nas.param_budget's size, if set).
    task, model, result = retrain(ctx, genotype)
    metrics = ctx.classification_metrics(task, model)
    search_time = float(found.get("search_time_s", 0.0))
    metrics["train/time_s"] = search_time + result.time_s
    metrics["nas/search_time_s"] = search_time
    metrics["nas/retrain_time_s"] = result.time_s
    metrics["nas/retrain_channels"] = retrain_channels(nas, ctx.data.info, ctx.norm, genotype)
    metrics["nas/skip_count"] = skip_count(genotype)
    for key in ("alpha_entropy_start", "alpha_entropy_end", "supernet_val_acc", "skip_share_end"):
        if key in found:
            metrics[f"nas/{key}"] = found[key]
    for key in ("search_flops", "budget_flops", "candidates"):
        if key in found:
            metrics[f"nas/{key}"] = found[key]
    # DARTS' collapse towards skip connections, epoch by epoch (0: alpha's start).
    for epoch, n in enumerate(found.get("skip_counts", [])):
        metrics[f"nas/skip_count/epoch{epoch}"] = n
    if found.get("skip_counts"):
        metrics["nas/skip_count_max"] = max(found["skip_counts"])
    return metrics


def check(ctx) -> list[str]:
    nas = ctx.cfg.nas
    ops = [str(o) for o in nas.ops]
    if len(set(ops)) != len(ops) or all(o == "none" for o in ops):
        raise ConfigError(
            f"nas.ops=[{','.join(ops)}]: expected distinct operations, at least one besides none"
        )
    return ops


def search(ctx, ph, ops: list[str], halves) -> None:
    """The search phase: alpha and w trained together; records the derived genotype."""
    nas = ctx.cfg.nas
    w_half, alpha_half = halves
    # DARTS' search cell normalises without a learned scale or shift (affine=False); the
    # derived network that is retrained has ordinary (affine) BN.
    norm = replace(ctx.norm, affine=False)
    model = SearchNetwork(ctx.data.info, norm, ops, int(nas.nodes), int(nas.cells), int(nas.channels)).to(
        ctx.device
    )
    xi = None if nas.xi is None else float(nas.xi)
    task = SearchTask(model, float(nas.arch_lr), bool(nas.second_order), ctx.loader("val"), xi=xi)
    # The genotype's skip connections after every epoch: kept in the phase record, so a
    # resumed search goes on with the list its checkpoint holds.
    task.skip_counts = ph.record.setdefault("skip_counts", [])
    order = torch.Generator().manual_seed(int(ctx.cfg.seed) + streams.LOADER)  # as ctx.train_loader's
    loader = PairedLoader(w_half, alpha_half, int(ctx.cfg.trainer.batch_size), order, ctx.augment)
    if not ph.resumed:  # a fresh search: record where alpha starts
        start = task.alpha_logs()
        ph.record["alpha_entropy_start"] = start["nas/alpha_entropy"]
        task.skip_counts[:] = [int(start["nas/skip_count"])]
        if ctx.logger is not None:
            ctx.logger.scalars(start, ctx.global_step)
            ctx.logger.figure("nas/alpha", alpha_figure(task, 0), 0)
    # val=None: no monitor, so the phase ends on the final alpha (see on_epoch_end).
    result = ctx.fit(task, phase=ph.name, train=loader, val=None, max_epochs=int(nas.search_epochs))
    final = task.alpha_logs()
    end = {
        "alpha_entropy_end": final["nas/alpha_entropy"],
        "skip_share_end": final.get("nas/op_share/skip_connect", 0.0),
        "search_time_s": result.time_s,
        "search_flops": search_flops(ctx, ops, w_half, alpha_half, SearchTask),
        "supernet_val_acc": ctx.evaluate(task, "val")["val/acc"],
        "alpha": model.cell_weights().detach().cpu().tolist(),
    }
    fig = alpha_figure(task, result.epochs)
    fig.savefig(ctx.run_dir / "alpha.png", dpi=120)
    ph.finish(genotype=task.genotype(), genotype_source="search", **end)


def save_genotype(ctx, record: dict, ops: list[str]) -> None:
    from rich.panel import Panel

    from ..training.progress import console

    genotype, source = record["genotype"], record["genotype_source"]
    lines = format_genotype(genotype)
    n_skip = skip_count(genotype)
    console().print(
        Panel("\n".join(lines) + f"\nskip connections: {n_skip}", title=f"genotype ({source})", expand=False)
    )
    out = {
        "source": source,
        "genotype": genotype,
        "ops": ops,
        "nodes": len(genotype),
        "skip_count": n_skip,
        "readable": lines,
    }
    if "alpha" in record:
        out["alpha_softmax"] = record["alpha"]
        out["edges"] = [[i, n] for n, i in edge_inputs(len(genotype))]
    (ctx.run_dir / "genotype.json").write_text(json.dumps(out, indent=2))
    if ctx.logger is not None:
        ctx.logger.text(
            "nas/genotype",
            "\n".join(f"    {ln}" for ln in lines) + f"\n\nskip connections: {n_skip} ({source})",
        )


def retrain_channels(nas, info, norm, genotype: Genotype) -> int:
    """nas.channels, or the channel count that gives the genotype nas.param_budget parameters."""
    if nas.param_budget is None:
        return int(nas.channels)
    return channels_for_params(info, norm, genotype, int(nas.cells), int(nas.param_budget))


def retrain(ctx, genotype: Genotype):
    nas = ctx.cfg.nas
    channels = retrain_channels(nas, ctx.data.info, ctx.norm, genotype)
    # From scratch, and from the same random stream whichever genotype (searched or random):
    # the comparison is then about the architecture, not about the initial draw.
    torch.manual_seed(int(ctx.cfg.seed))
    model = DerivedNetwork(ctx.data.info, ctx.norm, genotype, int(nas.cells), channels)
    task = ClassificationTask(model.to(ctx.device))
    result = ctx.fit(task, phase="retrain", max_epochs=int(nas.retrain_epochs))
    return task, model, result


# -- the search task --------------------------------------------------------------------------
class PairedLoader:
    """Batches (x_w, y_w, x_alpha, y_alpha): one half of the training split for the
    network weights, the other half for alpha.

    Both halves are shuffled by one generator, exposed as `.generator`: the trainer saves
    its state at the start of each epoch, so a resume replays both orders exactly.
    """

    def __init__(
        self,
        w_half: tuple[torch.Tensor, torch.Tensor],
        alpha_half: tuple[torch.Tensor, torch.Tensor],
        batch_size: int,
        generator: torch.Generator,
        transform=None,
    ):
        self.generator = generator
        self.w = TensorLoader(*w_half, batch_size, shuffle=True, generator=generator, transform=transform)
        self.alpha = TensorLoader(
            *alpha_half, batch_size, shuffle=True, generator=generator, transform=transform
        )

    def __len__(self) -> int:
        return min(len(self.w), len(self.alpha))

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        # An epoch is the shorter half (see __len__): the longer one's extra batches are dropped.
        for (x_w, y_w), (x_a, y_a) in zip(
            self.w.iter_from(start_batch), self.alpha.iter_from(start_batch), strict=False
        ):
            yield x_w, y_w, x_a, y_a


@contextmanager
def frozen(params: Sequence[torch.nn.Parameter]):
    """No gradients for `params` inside: the alpha step then skips every weight gradient."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def op_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each edge's op distribution; weights (E, O) -> (E,)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(dim=-1)


@torch.no_grad()
def optimizer_direction(
    opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The direction d of `opt`'s next step p <- p - lr * d for gradients `grads`, without
    stepping: SGD's (weight decay, momentum buffer, dampening, Nesterov) exactly; for other
    optimizers the gradient plus weight decay (their step is not a function of g alone)."""
    group = opt.param_groups[0]
    decay = float(group.get("weight_decay", 0.0))
    out = []
    for p, g in zip(params, grads, strict=True):
        d = g + decay * p if decay else g.clone()
        mu = float(group.get("momentum", 0.0)) if isinstance(opt, torch.optim.SGD) else 0.0
        buf = opt.state.get(p, {}).get("momentum_buffer") if mu else None
        if mu:
            new_buf = d.clone() if buf is None else mu * buf + (1 - float(group["dampening"])) * d
            d = d + mu * new_buf if group.get("nesterov") else new_buf
        out.append(d)
    return out


class SearchTask(Task):
    """Alternating updates of alpha (on the alpha half) and w (on the w half)."""

    manual_optimization = True
    fd_scale = 0.01  # |w+ - w| of the second-order finite difference (DARTS' value)

    def __init__(
        self,
        model: SearchNetwork,
        arch_lr: float,
        second_order: bool,
        val_loader: TensorLoader | None = None,
        xi: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.xi = xi  # the virtual step's size; None: the weight optimizer's current lr
        self.arch_lr = arch_lr
        self.second_order = second_order
        self.val_loader = val_loader
        self.nodes = cast(Cell, model.cells[0]).nodes
        self.skip_counts: list[int] = []  # the genotype's skip connections, epoch by epoch
        self.edge_labels = [f"{node_name(i)} → n{n}" for n, i in edge_inputs(self.nodes)]

    def configure_optimizers(self, make_optimizer):
        return {
            "w": make_optimizer(self.model.weight_parameters()),
            "alpha": torch.optim.Adam(
                self.model.arch_parameters(), lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3
            ),
        }

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y)

    def training_step(self, batch, trainer):
        x_w, y_w, x_a, y_a = batch
        # alpha first, on data the weights never train on: that is what makes alpha pick
        # ops that generalise rather than ops that fit (DARTS' bilevel problem).
        if self.second_order:
            grad, alpha_loss = self.unrolled_alpha_grad(batch, trainer.optimizers["w"])
            # A loss whose gradient w.r.t. alpha is `grad`, so the trainer's step applies it.
            trainer.optimize((self.model.alpha * grad).sum(), "alpha")
        else:
            with frozen(self.model.weight_parameters()):
                alpha_loss = self.loss(x_a, y_a)
            trainer.optimize(alpha_loss, "alpha")
        logits = self.model(x_w)
        loss = F.cross_entropy(logits, y_w)
        trainer.optimize(loss, "w")
        return {
            "loss": loss,
            "acc": accuracy(logits.argmax(1), y_w),
            "alpha_loss": alpha_loss.detach(),
        }

    def unrolled_alpha_grad(self, batch, w_optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """DARTS' second-order gradient of L_val(w'(alpha), alpha) (Liu et al. 2019, eq. 7-8):

            dL_val/dalpha - xi * (dL_train(w+)/dalpha - dL_train(w-)/dalpha) / (2 r)

        with w± = w ± r v, v = dL_val(w')/dw', r = fd_scale / |v| (a finite difference for the
        Hessian-vector product). The virtual step w' = w - xi * d takes the direction d of the
        weight optimizer's next step (optimizer_direction), as DARTS' reference code does
        (architect.py, `_compute_unrolled_model`: d = mu * m + g + lambda * w for SGD with
        momentum mu, momentum buffer m, weight decay lambda); for another optimizer (Adam)
        d = g + lambda * w. xi is `nas.xi`, by default the weight optimizer's current
        learning rate (DARTS: xi = eta_w). w is restored exactly afterwards; the optimizer's
        state is not touched.
        """
        x_w, y_w, x_a, y_a = batch
        w = self.model.weight_parameters()
        alpha = self.model.alpha
        xi = float(w_optimizer.param_groups[0]["lr"]) if self.xi is None else self.xi
        saved = [p.detach().clone() for p in w]
        g_train = _grads(self.loss(x_w, y_w), w)
        with torch.no_grad():
            for p, step in zip(w, optimizer_direction(w_optimizer, w, g_train), strict=True):
                p.sub_(xi * step)  # w'
        val_loss = self.loss(x_a, y_a)
        g_alpha, *v = _grads(val_loss, [alpha, *w])
        r = self.fd_scale / torch.cat([g.flatten() for g in v]).norm().clamp_min(1e-12)
        g_pm = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, s, g in zip(w, saved, v, strict=True):
                    p.copy_(s + sign * r * g)  # w + r v, then w - r v
            with frozen(w):
                g_pm.append(_grads(self.loss(x_w, y_w), [alpha])[0])
        with torch.no_grad():
            for p, s in zip(w, saved, strict=True):
                p.copy_(s)
        return g_alpha - xi * (g_pm[0] - g_pm[1]) / (2 * r), val_loss.detach()

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        return classification_metrics(self.model, loader)

    @torch.no_grad()
    def alpha_logs(self) -> dict[str, float]:
        weights = self.model.cell_weights()  # (E, O)
        entropy = op_entropy(weights)
        logs = {
            "nas/alpha_entropy": entropy.mean().item(),
            "nas/skip_count": float(skip_count(self.genotype())),
        }
        for k, op in enumerate(self.model.ops):
            logs[f"nas/op_share/{op}"] = weights[:, k].mean().item()
        for label, h in zip(self.edge_labels, entropy.tolist(), strict=True):
            logs[f"nas/edge_entropy/{label}"] = h
        return logs

    def genotype(self) -> Genotype:
        return derive_genotype(self.model.cell_weights(), self.model.ops, self.nodes)

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        logs = self.alpha_logs()
        self.skip_counts.append(int(logs["nas/skip_count"]))
        if self.val_loader is not None:
            # The supernet's accuracy on the held-out split (not the monitor: the genotype
            # comes from the final alpha, as in DARTS, not from the best epoch).
            val = trainer.evaluate(self, self.val_loader)
            logs["nas/supernet_val_acc"] = val["acc"]
            logs["nas/supernet_val_loss"] = val["loss"]
        if trainer.logger is not None:
            trainer.logger.figure("nas/alpha", alpha_figure(self, epoch), epoch)
        return logs


def alpha_figure(task: SearchTask, epoch: int):
    """Heatmap of softmax(alpha) per edge and op, the derived genotype's ops boxed."""
    weights = task.model.cell_weights().detach().float().cpu().numpy()  # (E, O)
    return figures.alpha_figure(weights, task.model.ops, task.edge_labels, task.genotype(), epoch)


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


# -- load_run --------------------------------------------------------------------------------
def load_model(cfg, data, ckpt: dict, norm) -> torch.nn.Module:
    """The derived network of a run, rebuilt from the genotype in the checkpoint."""
    genotype = ckpt.get("extra", {}).get("phases", {}).get("search", {}).get("genotype")
    if genotype is None or ckpt.get("phase") != "retrain":
        raise CheckpointError(
            f"this nas checkpoint is from phase {ckpt.get('phase')!r}: no "
            "retrained network yet (resume the run: trainer.resume=<run dir>)"
        )
    channels = retrain_channels(cfg.nas, data.info, norm, genotype)
    model = DerivedNetwork(data.info, norm, genotype, int(cfg.nas.cells), channels)
    model.load_state_dict(submodule_state(ckpt["task"]))
    return model


TECHNIQUES.add("nas", Technique("nas", run=run, needs=NEEDS, headline=HEADLINE, load_model=load_model))
