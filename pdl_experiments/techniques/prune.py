"""Pruning: train -> score -> prune -> fine-tune (optionally iterated), then what it cost.

Three levels (`prune.level`), each a small class with one `prune` step:

* weight: the smallest |w| of the conv and linear weights go to zero (torch.nn.utils.prune,
  over all layers at once or layer by layer, `prune.scope`). With BN, |w| is taken as
  inference applies it, times the next BN's gamma / sqrt(var) (`prune.fold_bn`): BN hides
  the scale of the weights before it, and raw |w| would empty whole layers. The masks stay
  on through fine-tuning, so pruned weights cannot revive, and are made permanent at the
  end. The checkpoint stores a masked weight as its kept values plus a bit mask (see
  `PruneTask`): about a fifth of the dense size at 90% sparsity.
* filter: whole filters go (Torch-Pruning removes them physically, together with their
  BN channels, the next layer's input channels and every channel tied to them by a residual
  addition). Filters are ranked by `prune.criterion`: l1 / l2 norm, mean activation of the
  feature map over the training set, or similarity to the other filters (FPGM: filters near
  the geometric median are the most replaceable). `prune.ratio` of every layer's filters
  go; the final classifier keeps its outputs.
* layer: whole residual blocks (identity shortcut, same shape in and out) are replaced by
  the identity, the ones whose removal costs the least validation accuracy first; a
  randomly chosen block is removed too, on a copy, as the baseline the criterion must beat.

`prune.iterations=n` prunes in n rounds, each followed by fine-tuning (phases finetune1,
finetune2, ...); every round keeps the same share of what is left, so the total reaches
`prune.ratio`. A run resumes in any phase: the pruned architecture is rebuilt from the
checkpoint (tensor shapes, weight masks, the removed blocks recorded in extra) before the
trainer restores its weights; `load_run` rebuilds it the same way through `load_model`.

Reported (metrics.json, TensorBoard, an end-of-run table): accuracy before / right after
pruning / after fine-tuning, parameters (total and non-zero), FLOPs per image
(FlopCounterMode: 2 FLOPs per multiply-accumulate), CPU latency at batch 256, checkpoint
size, sparsity per layer.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as tprune
from torch_pruning.pruner import function as tpf

from ..config import ConfigError
from ..models import build_model, count_params
from ..models.norm import is_norm
from ..models.reshape import reshape_to_state_dict
from .base import ClassificationTask

log = logging.getLogger("pdl_experiments")

DEFAULT_RATIO = {"weight": 0.9, "filter": 0.5}
LATENCY_BATCH = 256


# ----------------------------------------------------------------------------- the task
class PruneTask(ClassificationTask):
    """Classification with an optional fine-tune learning rate, storing masked weights compactly.

    torch.nn.utils.prune keeps a masked weight as `weight_orig` (dense) plus `weight_mask`
    (dense float): twice the dense size. The state dict instead holds `weight_values` (the
    kept entries, row-major), `weight_bits` (the mask, 1 bit per entry) and `weight_shape`;
    loading expands them again. Entries under the mask are dropped: they are zero in
    `weight_orig` too (`WeightLevel` zeroes them), so nothing is lost and resumes are exact.
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.lr: Optional[float] = None  # prune.finetune_lr during fine-tuning
        self.register_state_dict_post_hook(_pack_masked)
        self.register_load_state_dict_pre_hook(_unpack_masked)

    def configure_optimizers(self, make_optimizer):
        overrides = {} if self.lr is None else {"lr": self.lr}
        return {"default": make_optimizer(self.parameters(), **overrides)}


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 tensor as uint8 bytes, 8 entries per byte, row-major."""
    flat = mask.flatten().ne(0).to(torch.uint8).cpu()
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)  # (N/8, 8)
    return (flat * _BIT_WEIGHTS).sum(1).to(torch.uint8)


def unpack_bits(bits: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    flat = bits.cpu().unsqueeze(1).bitwise_and(_BIT_WEIGHTS).ne(0).flatten()  # (N/8 * 8,)
    return flat[: math.prod(shape)].view(shape)


def _pack_masked(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith("_mask")]:
        stem = key[: -len("_mask")]
        if stem + "_orig" not in state_dict:
            continue
        mask = state_dict.pop(key)
        orig = state_dict.pop(stem + "_orig")
        state_dict[stem + "_values"] = orig[mask.bool()]  # (nnz,)
        state_dict[stem + "_bits"] = pack_bits(mask)
        state_dict[stem + "_shape"] = torch.tensor(orig.shape)


def _unpack_masked(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith("_bits")]:
        stem = key[: -len("_bits")]
        if stem + "_values" not in state_dict:
            continue
        dense, mask = unpack_sparse(state_dict, stem)
        for k in ("_bits", "_values", "_shape"):
            state_dict.pop(stem + k)
        owner, name = _owner(module, stem[len(prefix):])
        if hasattr(owner, name + "_orig"):  # masks attached: keep them on
            state_dict[stem + "_orig"] = dense
            state_dict[stem + "_mask"] = mask.to(dense.dtype)
        else:
            state_dict[stem] = dense


def unpack_sparse(state_dict: dict, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense weight, bool mask) of a packed entry `<stem>_values/_bits/_shape`."""
    values = state_dict[stem + "_values"]
    mask = unpack_bits(state_dict[stem + "_bits"], state_dict[stem + "_shape"].tolist())
    dense = torch.zeros(mask.shape, dtype=values.dtype).masked_scatter_(mask, values.cpu())
    return dense.to(values.device), mask.to(values.device)


def _owner(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    path, _, name = dotted.rpartition(".")
    return (root.get_submodule(path) if path else root), name


# ----------------------------------------------------------------------------- measuring
def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers: what weight pruning masks and sparsity is reported for."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def effective_weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (masked while masks are attached)."""
    if hasattr(m, "weight_mask"):
        return m.weight_orig * m.weight_mask
    return m.weight


def count_nonzero(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name.endswith("_orig"):
                p = p * getattr(m, name[: -len("_orig")] + "_mask")
            total += int(p.count_nonzero())
    return total


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass over x; FlopCounterMode counts 2 per multiply-accumulate."""
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x.cpu())
    return int(counter.get_total_flops())


def cpu_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median CPU time of a forward pass over x per model (eval, no_grad, after warm-up).

    The models take turns within each repeat, so a machine whose load changes during the
    measurement slows all of them alike; the run's torch thread setting is left as it is.
    """
    cpu = {k: copy.deepcopy(m).cpu().eval() for k, m in models.items()}
    x = x.cpu()
    times: dict[str, list[float]] = {k: [] for k in cpu}
    with torch.no_grad():
        for m in cpu.values():
            for _ in range(3):
                m(x)
        for _ in range(repeats):
            for k, m in cpu.items():
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def describe(ctx, task: PruneTask) -> dict[str, float]:
    """Accuracy, size and cost of the task's model as it stands."""
    model = task.model
    x1 = ctx.data.test[0][:1]
    out = {"acc": ctx.evaluate(task, "test")["test/acc"], "val_acc": ctx.evaluate(task, "val")["val/acc"],
           "params": count_params(model), "nonzero": count_nonzero(model),
           "flops": count_flops(model, x1)}
    out["conv_nonzero"] = sum(int(effective_weight(m).count_nonzero())
                              for _, m in weight_layers(model) if isinstance(m, nn.Conv2d))
    for name, m in weight_layers(model):
        out[f"layer/{name}"] = effective_weight(m).numel()
    return out


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

    def prune(self, task: PruneTask, k: int) -> dict[str, Any]:
        raise NotImplementedError

    def finalize(self, model: nn.Module) -> None:
        """Make the pruning permanent once fine-tuning is over."""


class WeightLevel(Level):
    def check(self, model):
        if str(self.cfg.criterion) not in ("l1", "l2"):
            raise ConfigError(f"prune.criterion={self.cfg.criterion} does not apply to prune.level=weight: "
                              "expected l1 or l2 (weights are ranked by |w|)")

    def prune(self, task, k):
        model = task.model
        share = 1.0 - self.keep(k) / self.keep(k - 1)  # of the weights still unmasked
        params = [(m, "weight") for _, m in weight_layers(model)]
        scale = bn_scales(model, self.ctx.data.train[0][:2]) if self.cfg.fold_bn else {}
        scores = {(m, "weight"): _per_row(effective_weight(m).detach().abs(), scale.get(m)) for m, _ in params}
        # A layer pruned before holds a PruningContainer: `share` then applies to the
        # entries still unmasked.
        if str(self.cfg.scope) == "global":
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=share,
                                       importance_scores=scores)
        else:
            for m, name in params:
                tprune.l1_unstructured(m, name, amount=share, importance_scores=scores[(m, name)])
        with torch.no_grad():
            for m, _ in params:
                m.weight_orig.mul_(m.weight_mask)  # masked entries hold nothing worth keeping
        return {}

    def finalize(self, model):
        make_permanent(model)


def bn_scales(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """gamma / sqrt(running_var + eps) of the norm layer that directly follows a conv / linear.

    BN undoes any rescaling of the layer before it, so raw |w| says little across layers
    (a layer with many inputs gets small weights and would be pruned almost whole); times
    this scale it is the weight inference really applies (BN folded into the layer).
    The pairs are read off one traced forward pass.
    """
    order: list[nn.Module] = []
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or is_norm(m)]
    handles = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scales = {}
    for prev, cur in zip(order, order[1:]):
        if is_norm(cur) and isinstance(prev, (nn.Conv2d, nn.Linear)) and cur.weight is not None:
            scales[prev] = (cur.weight.detach().abs() / (cur.running_var + cur.eps).sqrt())  # (C_out,)
    return scales


def _per_row(w: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
    return w if scale is None else w * scale.view(-1, *([1] * (w.dim() - 1)))


def make_permanent(model: nn.Module) -> None:
    """Fold every weight mask into its weight (zeros stay zeros, the mask hooks go)."""
    for _, m in weight_layers(model):
        if hasattr(m, "weight_mask"):
            tprune.remove(m, "weight")


class MeanActivationImportance(tp.importance.GroupMagnitudeImportance):
    """Filter importance = mean activation of its feature map over the training set.

    Read where the map is consumed (the input of the next conv / linear layers, after BN,
    ReLU and pooling) and averaged over every batch; Torch-Pruning's ActivationImportance
    keeps the last batch only. A map that is rarely active carries little signal.
    """

    def __init__(self, model: nn.Module, batches: Iterable):
        super().__init__(group_reduction="mean", normalizer=None)
        self.means = _mean_input_activation(model, batches)  # {layer: (C_in,)}

    @torch.no_grad()
    def __call__(self, group):
        consumers = (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)
        imps, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            if dep.pruning_fn in consumers and dep.layer in self.means:
                imps.append(self.means[dep.layer][idxs])
                roots.append(group[i].root_idxs)
        return self._reduce(imps, roots) if imps else None


@torch.no_grad()
def _mean_input_activation(model: nn.Module, batches: Iterable) -> dict[nn.Module, torch.Tensor]:
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(m, inputs):
        a = inputs[0]  # (B, C, H, W) or (B, C)
        dims = [0] + list(range(2, a.dim()))
        sums[m] = sums.get(m, 0) + a.abs().mean(dims) * len(a)
        counts[m] = counts.get(m, 0) + len(a)

    layers = [m for _, m in weight_layers(model)]
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {m: sums[m] / counts[m] for m in sums}


def _criteria() -> dict[str, Callable]:
    # l1 / l2 / similarity rank a layer's own filters (group_reduction="first": the course's
    # "l_p norm of a filter"; FPGM: distance to the layer's other filters).
    return {
        "l1": lambda model, batches: tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer=None),
        "l2": lambda model, batches: tp.importance.MagnitudeImportance(p=2, group_reduction="first", normalizer=None),
        "similarity": lambda model, batches: tp.importance.FPGMImportance(p=2, group_reduction="first", normalizer=None),
        "activation": lambda model, batches: MeanActivationImportance(model, batches),
    }


def classifier(model: nn.Module) -> nn.Module:
    """The last linear layer: its outputs are the classes, never pruned."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


class FilterLevel(Level):
    def check(self, model):
        head = classifier(model)
        for name, m in weight_layers(model):
            width = m.weight.shape[0]
            if m is not head and int(width * (1 - self.ratio)) < 1:
                raise ConfigError(f"prune.ratio={self.ratio} would remove every filter of {name} ({width} "
                                  f"filters): expected prune.ratio < {1 - 1 / width:.4g} for prune.level=filter")

    def prune(self, task, k):
        model = task.model
        head = classifier(model)
        # Widths are targeted against the original ones, so rounding never compounds.
        widths = self.ctx.state.extra["prune"].setdefault(
            "widths", {n: m.weight.shape[0] for n, m in weight_layers(model) if m is not head})
        ratios = {}
        for name, m in weight_layers(model):
            if name in widths:
                target = int(widths[name] * self.keep(k) + 1e-6) if k == self.rounds else \
                    round(widths[name] * self.keep(k))
                # Torch-Pruning keeps int(width * (1 - ratio)): aim half a channel above.
                ratios[m] = max(0.0, 1.0 - (max(target, 1) + 0.5) / m.weight.shape[0])
        model.eval()  # tracing must not move BN statistics
        importance = _criteria()[str(self.cfg.criterion)](model, self.ctx.loader(self.ctx.data.train))
        pruner = tp.pruner.BasePruner(model, self.ctx.data.train[0][:2], importance=importance,
                                      pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=[head])
        pruner.step()
        return {}


def removable_blocks(model: nn.Module) -> list[int]:
    """Residual blocks that can become the identity: same shape in and out, identity shortcut."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        return []
    return [i for i, b in enumerate(blocks) if isinstance(getattr(b, "shortcut", None), nn.Identity)]


@contextmanager
def blocks_removed(model: nn.Module, idxs: Iterable[int]):
    """Temporarily replace blocks by the identity (for scoring)."""
    saved = {i: model.blocks[i] for i in idxs}
    try:
        for i in saved:
            model.blocks[i] = nn.Identity()
        yield model
    finally:
        for i, b in saved.items():
            model.blocks[i] = b


class LayerLevel(Level):
    def check(self, model):
        n = len(removable_blocks(model))
        if n == 0:
            raise ConfigError("prune.level=layer needs a model with residual blocks (self.blocks with "
                              "identity shortcuts): use model=resnet")
        if int(self.cfg.blocks) > n:
            raise ConfigError(f"prune.blocks={self.cfg.blocks} is out of range: this model has {n} removable "
                              f"blocks (identity shortcut, same shape in and out); expected 1..{n}")

    def prune(self, task, k):
        """Greedily drop the blocks whose removal keeps validation accuracy highest."""
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
                    val = ctx.evaluate(task, "val")
                # Ties in accuracy are common on small validation sets: lower loss breaks them.
                trial[i] = (val["val/acc"], -val["val/loss"])
                if step == 0:
                    scores[str(i)] = val["val/acc"]
            log.info("round %d, block %d of %d: val acc without each block %s", k, step + 1,
                     n_blocks, {i: round(v[0], 4) for i, v in trial.items()})
            chosen.append(max(trial, key=trial.get))

        # The baseline: as many blocks drawn at random (seeded, so resumes agree).
        gen = torch.Generator().manual_seed(int(ctx.cfg.seed) + 7919 * k)
        random_pick = [candidates[int(j)] for j in torch.randperm(len(candidates), generator=gen)[:n_blocks]]
        with blocks_removed(model, random_pick):
            acc_random = ctx.evaluate(task, "test")["test/acc"]
        for i in chosen:
            model.blocks[i] = nn.Identity()
        removed = sorted(set(self.removed()) | set(chosen))
        ctx.state.extra["prune"]["removed_blocks"] = removed
        log.info("removed blocks %s (criterion) | random baseline would remove %s", chosen, random_pick)
        return {"chosen": chosen, "random": random_pick, "acc_random_block": acc_random,
                "val_acc_without": scores}

    def removed(self) -> list[int]:
        return list(self.ctx.state.extra["prune"].get("removed_blocks", []))


LEVELS: dict[str, type[Level]] = {"weight": WeightLevel, "filter": FilterLevel, "layer": LayerLevel}


# ----------------------------------------------------------------------------- rebuilding
def restore_architecture(task: PruneTask, state: dict, extra: dict) -> None:
    """Make `task` hold the architecture a checkpoint was saved from (weights not loaded).

    Removed blocks come from extra; weight masks are re-attached where the state dict holds
    packed weights; every other tensor takes the checkpoint's shape (filter pruning).
    """
    model = task.model
    for i in (extra.get("prune") or {}).get("removed_blocks", []):
        model.blocks[int(i)] = nn.Identity()
    reshape_to_state_dict(task, state)
    for key in state:
        if key.endswith("_bits") and key[: -len("_bits")] + "_values" in state:
            owner, name = _owner(task, key[: -len("_bits")])
            if not hasattr(owner, name + "_mask"):
                tprune.custom_from_mask(owner, name, torch.ones_like(getattr(owner, name)))


def load_model(cfg, data, ckpt: dict, norm) -> nn.Module:
    """For load_run: the pruned model of a checkpoint, masks made permanent."""
    task = PruneTask(build_model(cfg.model, data.info, norm))
    restore_architecture(task, ckpt["task"], ckpt.get("extra", {}))
    task.load_state_dict(ckpt["task"])
    make_permanent(task.model)
    return task.model


# ----------------------------------------------------------------------------- the run
def _settings(ctx) -> tuple[str, float, int]:
    cfg = ctx.cfg.prune
    level = str(cfg.level)
    ratio = float(cfg.ratio) if cfg.ratio is not None else DEFAULT_RATIO.get(level, 0.0)
    return level, ratio, int(cfg.iterations)


def _source_model(ctx) -> nn.Module:
    """The model pruning starts from: trained here, or the best weights of prune.from_run."""
    if ctx.cfg.prune.from_run is None:
        return ctx.build_model()
    from ..run import load_run

    return load_run(ctx.cfg.prune.from_run).model.to(ctx.device)


def _check_from_run(ctx) -> Optional[Path]:
    """prune.from_run must be a finished run on the same model, data and norm settings."""
    src = ctx.cfg.prune.from_run
    if src is None:
        return None
    from omegaconf import OmegaConf

    from ..training.checkpoint import resolve_checkpoint

    run_dir = Path(src).expanduser()
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"prune.from_run={src}: not a run directory (no .hydra/config.yaml)")
    try:
        best = resolve_checkpoint(run_dir, "best.pt")
    except Exception as e:  # noqa: BLE001 - one line for the user
        raise ConfigError(f"prune.from_run={src}: {e}") from e
    old = OmegaConf.load(cfg_path)
    old.seed = old.get("seed", ctx.cfg.seed)
    for section in ("model", "dataset", "bn.enabled", "bn.impl"):
        theirs = _flat(OmegaConf.select(old, section))
        ours = _flat(OmegaConf.select(ctx.cfg, section))
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                full = f"{section}.{key}" if key else section
                raise ConfigError(f"prune.from_run={src} was run with {full}={theirs.get(key)}, this run has "
                                  f"{ours.get(key)}: expected the same model, dataset, seed and bn settings")
    return best


def _flat(node: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {"": node}


def run(ctx) -> dict[str, float]:
    level_name, ratio, n_rounds = _settings(ctx)
    level = LEVELS[level_name](ctx, ratio, n_rounds)
    source_ckpt = _check_from_run(ctx)
    model = _source_model(ctx)
    level.check(model)
    task = PruneTask(model)

    # A resumed run skips the phases its checkpoint had finished; if that checkpoint was
    # taken after pruning, the pruned architecture is rebuilt before its weights load.
    phases = ["finetune"] if n_rounds == 1 else [f"finetune{k}" for k in range(1, n_rounds + 1)]
    resumed = ctx.state.resume_phase
    finished = set(ctx.state.phases_done) - {resumed} if resumed else set()
    if resumed is not None and resumed not in ["train", *phases]:
        raise ConfigError(f"trainer.resume={ctx.cfg.trainer.resume} stopped in phase {resumed}, which a run "
                          f"with prune.iterations={n_rounds} does not have: resume with the same prune.* settings")
    state = ctx.state.extra.setdefault("prune", {"rounds": []})
    if resumed in phases:
        restore_architecture(task, ctx.state.resume["task"], ctx.state.extra)
    else:
        if source_ckpt is None:
            ctx.fit(task, phase="train")
            source_ckpt = ctx.run_dir / "checkpoints" / "best.pt"
        before = describe(ctx, task)
        before["ckpt_bytes"] = source_ckpt.stat().st_size
        state["before"] = before
        log.info("before pruning: test acc %.4f, %d params, %d FLOPs", before["acc"], before["params"],
                 before["flops"])

    for k, phase in enumerate(phases, 1):
        if phase in finished:
            continue
        if phase != resumed:
            info = level.prune(task, k)
            info["acc_pruned"] = ctx.evaluate(task, "test")["test/acc"]
            state["rounds"] = state["rounds"][: k - 1] + [info]  # saved with the next checkpoint
            log.info("round %d/%d pruned: test acc %.4f", k, n_rounds, info["acc_pruned"])
        task.lr = ctx.cfg.prune.finetune_lr
        ctx.fit(task, phase=phase, max_epochs=int(ctx.cfg.prune.finetune_epochs))
        if n_rounds > 1 and ctx.logger is not None:
            ctx.logger.scalars({"prune/round/acc_pruned": state["rounds"][k - 1]["acc_pruned"],
                                "prune/round/acc_finetuned": ctx.evaluate(task, "test")["test/acc"]}, k)

    level.finalize(task.model)
    metrics = ctx.classification_metrics(task, task.model)
    metrics.update(_report(ctx, task, state, level_name))
    return metrics


def _report(ctx, task: PruneTask, state: dict, level_name: str) -> dict[str, float]:
    before, rounds = state["before"], state["rounds"]
    after = describe(ctx, task)
    after["ckpt_bytes"] = (ctx.run_dir / "checkpoints" / "best.pt").stat().st_size
    x = ctx.data.test[0]
    x = x.repeat(math.ceil(LATENCY_BATCH / len(x)), *([1] * (x.dim() - 1)))[:LATENCY_BATCH]  # (256, C, H, W)
    log.info("measuring CPU latency at batch %d (%d repeats, %d threads)", LATENCY_BATCH,
             int(ctx.cfg.prune.latency_repeats), torch.get_num_threads())
    lat = cpu_latency_ms({"before": _source_model(ctx), "after": task.model}, x, int(ctx.cfg.prune.latency_repeats))

    m: dict[str, float] = {
        "prune/acc_before": before["acc"],
        "prune/acc_pruned": rounds[-1]["acc_pruned"],
        "prune/acc_finetuned": after["acc"],
        "prune/params_before": before["params"],
        "prune/params_after": after["params"],
        "prune/nonzero_before": before["nonzero"],
        "prune/nonzero_after": after["nonzero"],
        "prune/flops_before": before["flops"],
        "prune/flops_after": after["flops"],
        "prune/flops_share": after["flops"] / before["flops"],
        "prune/conv_params_share": after["conv_nonzero"] / max(before["conv_nonzero"], 1),
        "prune/latency_ms_before": lat["before"],
        "prune/latency_ms_after": lat["after"],
        "prune/latency_ratio": lat["after"] / lat["before"],
        "prune/ckpt_bytes_before": before["ckpt_bytes"],
        "prune/ckpt_bytes_after": after["ckpt_bytes"],
        "prune/ckpt_share": after["ckpt_bytes"] / before["ckpt_bytes"],
    }
    # Sparsity: the share of a layer's original weights that are zero or gone.
    kept_total = orig_total = 0
    live = {n: int(effective_weight(mod).count_nonzero()) for n, mod in weight_layers(task.model)}
    for key, numel in before.items():
        if key.startswith("layer/"):
            name = key[len("layer/"):]
            kept = live.get(name, 0)
            m[f"prune/sparsity/{name}"] = 1.0 - kept / numel
            kept_total, orig_total = kept_total + kept, orig_total + numel
    m["prune/sparsity"] = 1.0 - kept_total / max(orig_total, 1)
    if level_name == "layer":
        m["prune/blocks_removed"] = len(state.get("removed_blocks", []))
        m["prune/acc_random_block"] = rounds[-1]["acc_random_block"]
        for i, acc in rounds[0]["val_acc_without"].items():
            m[f"prune/val_acc_without_block/{i}"] = acc
    if len(rounds) > 1:
        for k, r in enumerate(rounds, 1):
            m[f"prune/acc_pruned_round{k}"] = r["acc_pruned"]
    _show(ctx, m, level_name, state)
    return m


def _show(ctx, m: dict, level_name: str, state: dict) -> None:
    """The end-of-run comparison, as a rich table and as TensorBoard text and figures."""
    from rich.console import Console
    from rich.table import Table

    rows = [("test accuracy", "acc_before", "acc_finetuned", "{:.4f}"),
            ("parameters", "params_before", "params_after", "{:,.0f}"),
            ("non-zero parameters", "nonzero_before", "nonzero_after", "{:,.0f}"),
            ("FLOPs / image (2 x MACs)", "flops_before", "flops_after", "{:,.0f}"),
            (f"CPU latency, batch {LATENCY_BATCH} (ms)", "latency_ms_before", "latency_ms_after", "{:.2f}"),
            ("checkpoint bytes", "ckpt_bytes_before", "ckpt_bytes_after", "{:,.0f}")]
    table = Table(title=f"pruning ({level_name} level): dense vs pruned", header_style="bold")
    for col in ("", "before", "after fine-tuning", "after / before"):
        table.add_column(col, justify="right" if col else "left")
    md = ["| | before | after fine-tuning | after / before |", "|---|---|---|---|"]
    for label, b, a, fmt in rows:
        vb, va = m[f"prune/{b}"], m[f"prune/{a}"]
        cells = [fmt.format(vb), fmt.format(va), f"{va / vb:.3f}" if vb else "-"]
        table.add_row(label, *cells)
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    extra = [f"test accuracy right after pruning: {m['prune/acc_pruned']:.4f}",
             f"sparsity (conv + linear weights): {m['prune/sparsity']:.4f}"]
    if level_name == "layer":
        extra.append(f"blocks removed {state.get('removed_blocks')}: test acc {m['prune/acc_pruned']:.4f} "
                     f"(criterion) vs {m['prune/acc_random_block']:.4f} (random {state['rounds'][-1]['random']}),"
                     " both before fine-tuning")
    Console().print(table)
    for line in extra:
        log.info(line)
    if ctx.logger is None:
        return
    ctx.logger.text("prune/report", "\n".join(md + [""] + [f"* {e}" for e in extra]))
    ctx.logger.figure("prune/sparsity_per_layer", _sparsity_figure(m))
    if level_name == "layer":
        ctx.logger.figure("prune/block_scores", _block_figure(m, state))


def _sparsity_figure(m: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k[len("prune/sparsity/"):] for k in m if k.startswith("prune/sparsity/")]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(names) + 1), 3.2))
    ax.bar(range(len(names)), [m[f"prune/sparsity/{n}"] for n in names], color="tab:red")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of weights zero / removed")
    ax.set_title(f"sparsity per layer (overall {m['prune/sparsity']:.3f})")
    fig.tight_layout()
    return fig


def _block_figure(m: dict, state: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = state["rounds"][0]
    scores = first["val_acc_without"]
    idx = sorted(scores, key=int)
    colors = ["tab:green" if int(i) in first["chosen"] else
              "tab:orange" if int(i) in first["random"] else "tab:gray" for i in idx]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar([f"block {i}" for i in idx], [scores[i] for i in idx], color=colors)
    ax.axhline(state["before"]["val_acc"], color="k", lw=1, ls="--", label="all blocks")
    ax.set_ylabel("val accuracy without the block")
    ax.set_ylim(max(0.0, min(scores.values()) - 0.05), 1.0)
    ax.set_title("green: removed (criterion), orange: random baseline", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
