"""Batch normalization: BN on/off (bn.enabled) and torch vs course layer (bn.impl).

The recipe is ordinary supervised training; what this technique adds is a look inside.
Each epoch it measures, on a fixed batch of training images (the probe):
  * the gradient norm of every conv/linear weight, and first layer / last layer
    (`bn/grad_ratio_first_last`): without BN a deep plain net's gradient vanishes on its
    way back to the first layer, with BN it arrives intact. When every ReLU is dead the
    last layer's gradient is 0 as well and the ratio 0/0 is undefined (left out); the
    first layer's gradient per unit of error at the output (`bn/grad_first_per_output`,
    ||dL/dW_first|| / ||dL/dlogits||) is always defined (the softmax's error at the
    output is never 0) and is 0 exactly when no signal gets back to the first layer;
  * the mean of every such layer's input, and its std across the batch (per input feature,
    averaged): how much what the layer sees changes from one image to the next. With BN it
    stays put from layer to layer; without it the signal shrinks layer after layer until
    the classifier's input (`bn/act_std_last`) no longer depends on the image;
  * histograms of every layer's pre-activations (its output, before BN and ReLU).
At the end the same is measured on the best weights, returned in metrics.json, and drawn
as one picture (gradient norm and input std per layer, log scale) in TensorBoard.

`model=plain_deep` is the net to look at: `pdl-run technique=bn model=plain_deep
bn.enabled=true,false -m` trains it with and without BN, everything else equal.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data import as_float
from ..models.common import weight_layers
from ..registry import TECHNIQUES, Needs, Technique
from ..training.task import ClassificationTask

HIST_MAX_VALUES = 4096  # histograms of a strided subset: the full tensors cost ~50x more
# Headline metrics besides test/val acc and loss (outputs.headline: the HPARAMS columns).
HEADLINE = ("bn/grad_ratio_first_last", "bn/grad_first_per_output", "bn/act_std_last")
LAYERS = "weight_layers"  # TensorBoard group of the per-layer diagnostics

NEEDS = Needs(model=("image_classifier",), data=("image",))  # what it works with (config/checks.py)


# ----------------------------------------------------------------------------- the recipe
def run(ctx) -> dict[str, float]:
    bn = ctx.cfg.bn
    model = ctx.build_model()
    x, y = ctx.data.train
    g = torch.Generator().manual_seed(int(ctx.cfg.seed))
    idx = torch.randperm(len(y), generator=g)[: min(int(bn.probe_size), len(y))].to(y.device)
    task = BNDiagnosticsTask(model, (as_float(x[idx]), y[idx]), enabled=bool(bn.diagnostics))
    ctx.fit(task)
    metrics = ctx.classification_metrics(task, model)
    if task.enabled:
        stats, output_grad = measure(model, *task.probe)  # on the best weights, which fit() ended on
        metrics.update({k: v for k, v in summarize(stats, output_grad).items() if k in FINAL_KEYS})
        if ctx.logger is not None:
            state = f"BN {bn.impl}" if bn.enabled else "no BN"
            title = (
                f"{state}: gradient norm per layer (best weights), first / dL/dlogits = "
                f"{metrics['bn/grad_first_per_output']:.1e}"
            )
            ctx.logger.figure("bn/gradient_flow", gradient_figure(stats, title), task.step)
    return metrics


@dataclass
class LayerStats:
    """One weight layer, as seen on the probe batch."""

    name: str
    grad_norm: float  # ||dL/dW||
    in_mean: float  # mean of the layer's input
    in_std: float  # std of the input across the batch, averaged over features
    preact: torch.Tensor | None = field(default=None, repr=False)  # output sample, for histograms


def input_stats(x: torch.Tensor) -> tuple[float, float]:
    """Mean of x ((N, ...)), and its std over the batch axis averaged over the rest.

    Over the batch only: a plain net's biases and zero padding keep the activations varying
    across channels and positions even when they no longer vary with the image.
    """
    x = x.detach().float()
    return x.mean().item(), x.std(dim=0, unbiased=False).mean().item()


@contextlib.contextmanager
def side_effect_free(model: nn.Module):
    """Run `model` in training mode, then put back its BN running stats and the RNG.

    The probe must see what training sees (batch statistics, dropout), but a train-mode
    forward updates running_mean/var and draws random numbers: without this, turning
    diagnostics on would change the trained model.
    """
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    cuda = [
        d.index if d.index is not None else torch.cuda.current_device()
        for d in {p.device for p in model.parameters()}
        if d.type == "cuda"
    ]
    with torch.random.fork_rng(devices=cuda):
        model.train()
        try:
            yield
        finally:
            model.train(was_training)
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])


def measure(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, keep_preacts: bool = False
) -> tuple[list[LayerStats], float]:
    """Per weight layer, in the order the forward pass reaches them: grads and input stats;
    and ||dL/dlogits||, the error the backward pass starts from."""
    names = dict(weight_layers(model))
    order: list[str] = []  # forward order, which registration order need not be
    inputs: dict[str, tuple[float, float]] = {}
    preacts: dict[str, torch.Tensor] = {}

    def before(name):
        def hook(module, args):
            if name not in inputs:
                order.append(name)
                inputs[name] = input_stats(args[0])

        return hook

    def after(name):
        def hook(module, args, output):
            if name not in preacts:
                # Copy now: without BN an in-place ReLU overwrites this very tensor next.
                flat = output.detach().flatten()
                preacts[name] = flat[:: max(1, flat.numel() // HIST_MAX_VALUES)].float().cpu().clone()

        return hook

    hooks = [m.register_forward_pre_hook(before(n)) for n, m in names.items()]
    if keep_preacts:
        hooks += [m.register_forward_hook(after(n)) for n, m in names.items()]
    try:
        with side_effect_free(model):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            # autograd.grad leaves every .grad (and so the optimizer) alone.
            *grads, out_grad = torch.autograd.grad(loss, [*(names[n].weight for n in order), logits])
    finally:
        for h in hooks:
            h.remove()
    layers = [
        LayerStats(n, g.norm().item(), *inputs[n], preacts.get(n)) for n, g in zip(order, grads, strict=True)
    ]
    return layers, out_grad.norm().item()


def summarize(stats: list[LayerStats], output_grad: float) -> dict[str, float]:
    """The scalars of one measurement. Per-layer tags are `weight_layers/<measure>/<depth>_<layer>`:
    the depth sorts them, and the group sorts after test/, train/ and val/ in TensorBoard (see
    docs/architecture.md, "TensorBoard layout"); the summaries stay under bn/."""
    logs: dict[str, float] = {}
    for i, s in enumerate(stats):
        tag = f"{i:02d}_{s.name}"
        logs[f"{LAYERS}/grad_norm/{tag}"] = s.grad_norm
        logs[f"{LAYERS}/act_mean/{tag}"] = s.in_mean
        logs[f"{LAYERS}/act_std/{tag}"] = s.in_std
    first, last = stats[0], stats[-1]
    logs["bn/grad_norm_first"] = first.grad_norm
    logs["bn/grad_norm_last"] = last.grad_norm
    if last.grad_norm > 0:  # 0 / 0 when every ReLU is dead: undefined, left out
        logs["bn/grad_ratio_first_last"] = first.grad_norm / last.grad_norm
    logs["bn/grad_first_per_output"] = first.grad_norm / max(output_grad, 1e-30)
    logs["bn/act_std_last"] = last.in_std  # what the classifier gets to see
    return logs


FINAL_KEYS = (
    "bn/grad_ratio_first_last",
    "bn/grad_first_per_output",
    "bn/act_std_last",
    "bn/grad_norm_first",
    "bn/grad_norm_last",
)


class BNDiagnosticsTask(ClassificationTask):
    """Classification, plus the per-layer measurement at the end of every epoch."""

    def __init__(self, model: nn.Module, probe: tuple[torch.Tensor, torch.Tensor], enabled: bool = True):
        super().__init__(model)
        self.probe = probe
        self.enabled = enabled
        self.step = 0  # global step of the last epoch end: where the final picture goes

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        self.step = trainer.global_step
        if not self.enabled:
            return {}
        logger = trainer.logger
        stats, output_grad = measure(self.model, *self.probe, keep_preacts=logger is not None)
        if logger is not None:
            for i, s in enumerate(stats):
                logger.histogram(f"{LAYERS}/pre_activation/{i:02d}_{s.name}", s.preact, trainer.global_step)
        return summarize(stats, output_grad)


def gradient_figure(stats: list[LayerStats], title: str):
    """Gradient norm and input std per layer, log scale: where the signal dies, if it does."""
    from matplotlib.figure import Figure

    def floored(values):  # a log axis cannot show 0 (behind a layer of dead ReLUs)
        nonzero = [v for v in values if v > 0]
        floor = min(nonzero) / 10 if nonzero else 1e-12
        return [max(v, floor) for v in values], ["tab:blue" if v > 0 else "tab:gray" for v in values]

    depth = range(len(stats))
    fig = Figure(figsize=(7, 5.5))
    ax_g, ax_a = fig.subplots(2, 1, sharex=True)
    grads, colors = floored([s.grad_norm for s in stats])
    ax_g.bar(depth, grads, color=colors)  # gray: exactly 0
    ax_g.set_yscale("log")
    ax_g.set_ylabel("||dL/dW||  (gray: 0)")
    ax_g.set_title(title, fontsize=10)
    ax_a.plot(depth, floored([s.in_std for s in stats])[0], "o-", color="tab:orange")
    ax_a.set_yscale("log")
    ax_a.set_ylabel("std of the layer's input")
    ax_a.set_xticks(list(depth))
    ax_a.set_xticklabels([s.name for s in stats], rotation=45, ha="right", fontsize=7)
    ax_a.set_xlabel("weight layer (input -> output)")
    for ax in (ax_g, ax_a):
        ax.grid(True, which="major", axis="y", alpha=0.3)
    fig.subplots_adjust(
        left=0.12, right=0.97, top=0.93, bottom=0.2, hspace=0.12
    )  # no tight_layout: a draw less
    return fig


TECHNIQUES.add("bn", Technique("bn", run=run, needs=NEEDS, headline=HEADLINE))
