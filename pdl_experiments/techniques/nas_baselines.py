"""technique=nas's baselines: random search (nas.baseline=random_search), the data both
searches see and the compute they spend, so that random search gets what the DARTS search
of the same config would get.

Random search (Li & Talwalkar 2019, "Random Search and Reproducibility for NAS"): random
genotypes of the same space, each trained for `nas.candidate_epochs` at the search's size
(`nas.channels`) on the half of the training split that the DARTS search trains w on,
scored on the other half (the one DARTS trains alpha on); the best one is retrained like
DARTS' genotype. Nothing outside the training split is looked at.

Compute is counted in FLOPs by torch's FlopCounterMode (conv and matmul, 2 per
multiply-accumulate), forward and backward, of one real step; the search's budget is that
step's count per image times the images its epochs go through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..data import as_float
from ..models.darts import DerivedNetwork, Genotype, SearchNetwork, random_genotype
from ..training.task import ClassificationTask

log = logging.getLogger("pdl_experiments")


def split_halves(
    x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training split in two seeded halves: the search trains w on the first and alpha (or
    scores the random candidates) on the second."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(y.device)
    half = len(y) // 2
    w_idx, a_idx = order[:half], order[half:]
    return (x[w_idx], y[w_idx]), (x[a_idx], y[a_idx])


def random_search(ctx, ph, ops: list[str], halves, budget: float) -> None:
    """The search phase of nas.baseline=random_search: records the best candidate's genotype.

    Candidate j is its own phase (`candidate<j>`), so a resumed run keeps the ones it trained
    and continues the one it was stopped in; the genotypes come from one seeded stream and
    each candidate's initial weights from seed + j, whatever was resumed. `budget`: the FLOPs
    of the DARTS search of the same config (search_flops).
    """
    nas, seed = ctx.cfg.nas, int(ctx.cfg.seed)
    w_half, alpha_half = halves
    wanted = None if nas.candidates is None else int(nas.candidates)
    gen = torch.Generator().manual_seed(seed)
    tried: list[dict[str, Any]] = []
    spent = 0.0
    while wanted is None or len(tried) < wanted:
        genotype = random_genotype(ops, int(nas.nodes), gen)
        j = len(tried) + 1
        cost = candidate_flops(ctx, genotype, w_half, alpha_half)
        if wanted is None and tried and spent + cost > budget:
            break  # the next one would spend more than the DARTS search
        tried.append(_candidate(ctx, j, genotype, w_half, alpha_half, cost))
        spent += cost
    best = max(tried, key=lambda c: (c["acc"], -c["loss"]))
    log.info(
        "random search: %d candidates, %.3g of the DARTS search's %.3g FLOPs; best: candidate %d "
        "(held-out half acc %.4f)",
        len(tried),
        spent,
        budget,
        best["j"],
        best["acc"],
    )
    ph.finish(
        genotype=best["genotype"],
        genotype_source="random_search",
        search_time_s=sum(c["time_s"] for c in tried),
        search_flops=spent,
        budget_flops=budget,
        candidates=len(tried),
        candidate_accs=[c["acc"] for c in tried],
    )


def _candidate(ctx, j: int, genotype: Genotype, w_half, alpha_half, cost: float) -> dict[str, Any]:
    """Train candidate j on the weight half, score it on the held-out half (its last epoch)."""
    ph = ctx.phase(f"candidate{j}")
    if not ph.done:
        torch.manual_seed(int(ctx.cfg.seed) + j)  # its own initial draw, resumed or not
        task = ClassificationTask(_network(ctx, genotype).to(ctx.device))
        loader = ctx.train_loader(w_half, seed_offset=j)
        # val=None: no best-epoch choice, the candidate is judged as its training ends
        result = ctx.fit(
            task, phase=ph.name, train=loader, val=None, max_epochs=int(ctx.cfg.nas.candidate_epochs)
        )
        score = ctx.trainer.evaluate(task, ctx.loader(alpha_half))
        ph.finish(
            j=j, genotype=genotype, acc=score["acc"], loss=score["loss"], flops=cost, time_s=result.time_s
        )
        log.info("candidate %d: held-out half acc %.4f", j, score["acc"])
    return ph.record


def _network(ctx, genotype: Genotype) -> DerivedNetwork:
    nas = ctx.cfg.nas
    return DerivedNetwork(ctx.data.info, ctx.norm, genotype, int(nas.cells), int(nas.channels))


# -- compute ---------------------------------------------------------------------------------
def search_flops(ctx, ops: list[str], w_half, alpha_half, search_task: Callable[..., Any]) -> float:
    """FLOPs the DARTS search of this config spends: one supernet step (alpha's update and
    w's, second order included when set) per pair of batches, over nas.search_epochs.
    `search_task` is the search's own task class (nas.SearchTask): its step is counted as it
    runs."""

    nas = ctx.cfg.nas
    bs = int(ctx.cfg.trainer.batch_size)
    with torch.random.fork_rng(devices=[]):  # building networks must not move the run's RNG
        norm = replace(ctx.norm, affine=False)  # as the search builds it
        model = SearchNetwork(ctx.data.info, norm, ops, int(nas.nodes), int(nas.cells), int(nas.channels))
        xi = None if nas.xi is None else float(nas.xi)
        task = search_task(model, float(nas.arch_lr), bool(nas.second_order), xi=xi)
        x_w, y_w = as_float(w_half[0][:bs]).cpu(), w_half[1][:bs].cpu()
        x_a, y_a = as_float(alpha_half[0][:bs]).cpu(), alpha_half[1][:bs].cpu()
        stub = _BackwardOnly(task.configure_optimizers(ctx.make_optimizer))
        per_pair = _counted(lambda: task.training_step((x_w, y_w, x_a, y_a), stub)) / min(len(y_w), len(y_a))
    return per_pair * min(len(w_half[1]), len(alpha_half[1])) * int(nas.search_epochs)


def candidate_flops(ctx, genotype: Genotype, w_half, alpha_half) -> float:
    """FLOPs of one candidate: its training epochs on the weight half (forward and backward)
    and one scoring pass over the held-out half (forward)."""
    bs = int(ctx.cfg.trainer.batch_size)
    with torch.random.fork_rng(devices=[]):
        model = _network(ctx, genotype)
        x, y = as_float(w_half[0][:bs]).cpu(), w_half[1][:bs].cpu()
        train = _counted(lambda: F.cross_entropy(model(x), y).backward()) / len(y)
        with torch.no_grad():
            forward = _counted(lambda: model(x)) / len(y)
    epochs = int(ctx.cfg.nas.candidate_epochs)
    return train * len(w_half[1]) * epochs + forward * len(alpha_half[1])


def _counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class _BackwardOnly:
    """Stands in for the trainer while a step is counted: backward, no update."""

    def __init__(self, optimizers: dict):
        self.optimizers = optimizers

    def optimize(self, loss: torch.Tensor, name: str = "default") -> None:
        loss.backward()
