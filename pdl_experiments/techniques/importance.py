"""Pruning criteria: what ranks a weight or a filter as unimportant (technique=prune).

Filter criteria are Torch-Pruning importance objects; each is a small class or a
configured one of Torch-Pruning's own, chosen by `prune.criterion`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from ..models.common import weight_layers
from ..models.norm import is_norm


def filter_criteria(seed: int = 0) -> dict[str, Callable]:
    """prune.criterion -> (model, batches) -> importance, for the filter level; `seed` draws
    the random criterion's scores."""
    # l1 / l2 / similarity rank a layer's own filters (group_reduction="first": the course's
    # "l_p norm of a filter"; similarity: distance to the layer's other filters).
    return {
        "l1": lambda model, batches: tp.importance.MagnitudeImportance(
            p=1, group_reduction="first", normalizer=None
        ),
        "l2": lambda model, batches: tp.importance.MagnitudeImportance(
            p=2, group_reduction="first", normalizer=None
        ),
        "similarity": lambda model, batches: FilterSimilarityImportance(),
        "activation": lambda model, batches: MeanActivationImportance(model, batches),
        "random": lambda model, batches: SeededRandomImportance(seed),
    }


class SeededRandomImportance(tp.importance.Importance):
    """The control: every filter scored uniformly at random (Li et al. 2017, Fig. 2; Mittal
    et al. 2018), from a generator of its own, so a seed gives the same filters and the run's
    other random streams are untouched (Torch-Pruning's RandomImportance draws from torch's
    global generator)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group, **kwargs):
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.generator)


class FilterSimilarityImportance(tp.importance.GroupMagnitudeImportance):
    """Filter importance = summed Euclidean distance of the filter to the layer's other
    filters (FPGM, He et al. 2019: a filter near the geometric median is the most
    replaceable by the others). Distances between the filters themselves, signed weights:
    Torch-Pruning's FPGMImportance measures them between |w|^p, which makes a filter and its
    negation (opposite features) count as identical.
    """

    def __init__(self):
        super().__init__(p=2, group_reduction="first", normalizer=None)

    @torch.no_grad()
    def __call__(self, group):
        producers = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels)
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if dep.pruning_fn in producers and isinstance(layer, (nn.Conv2d, nn.Linear)):
                w = layer.weight.data
                if getattr(layer, "transposed", False):
                    w = w.transpose(0, 1)
                w = w[idxs].flatten(1).float()
                return self._reduce([torch.cdist(w[None], w[None])[0].sum(0)], [group[i].root_idxs])
        return None


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
    with _eval_mode(model):
        try:
            for x, _ in batches:
                model(x)
        finally:
            for h in handles:
                h.remove()
    return {m: sums[m] / counts[m] for m in sums}


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
    with _eval_mode(model), torch.no_grad():
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
    scales: dict[nn.Module, torch.Tensor] = {}
    # Consecutive pairs: order[1:] is one shorter, so the last module pairs with nothing.
    for prev, cur in zip(order, order[1:], strict=False):
        # A norm layer without running statistics (track_running_stats=False) has no fixed
        # scale to fold: its layer keeps the raw |w|.
        if (
            is_norm(cur)
            and isinstance(prev, (nn.Conv2d, nn.Linear))
            and cur.weight is not None
            and cur.running_var is not None
        ):
            scales[prev] = cur.weight.detach().abs() / (cur.running_var + cur.eps).sqrt()  # (C_out,)
    return scales


class _eval_mode:
    """Put a model in eval mode for a measurement, then back in the mode it was in."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def classifier(model: nn.Module) -> nn.Module:
    """The last linear layer: its outputs are the classes, never pruned."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def fisher_ratio(model: nn.Module, loader) -> float:
    """Class separation of the penultimate features (the last linear layer's input): the
    between-class scatter over the within-class scatter, tr(S_b) / tr(S_w)."""
    feats: list[torch.Tensor] = []
    handle = classifier(model).register_forward_pre_hook(
        lambda m, inp: feats.append(inp[0].flatten(1).float())
    )
    was_training = model.training
    model.eval()
    labels = []
    try:
        for x, y in loader:
            model(x)
            labels.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    f, y = torch.cat(feats), torch.cat(labels)  # (N, D), (N,)
    mean = f.mean(0)
    between = within = 0.0
    for c in y.unique():
        fc = f[y == c]
        between += len(fc) * float((fc.mean(0) - mean).pow(2).sum())
        within += float((fc - fc.mean(0)).pow(2).sum())
    return between / max(within, 1e-12)
