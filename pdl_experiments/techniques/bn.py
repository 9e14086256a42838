"""Batch normalization: BN on/off (bn.enabled) and torch vs course layer (bn.impl).

The recipe is ordinary supervised training; what this technique adds is a look inside:
each epoch it measures, on a fixed batch, the gradient norm of every layer's weights and
the mean/std of every normalised layer's input, so the dashboard shows why a deep plain net
stalls without BN (gradients vanish towards the first layer) and trains with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClassificationTask


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in forward order (their grads tell where the signal dies)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class BNDiagnosticsTask(ClassificationTask):
    def __init__(self, model: nn.Module, probe: tuple[torch.Tensor, torch.Tensor],
                 enabled: bool = True):
        super().__init__(model)
        self.probe = probe
        self.enabled = enabled
        self.last: dict[str, float] = {}

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        if not self.enabled:
            return {}
        x, y = self.probe
        layers = weight_layers(self.model)
        acts: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_hook(_capture(acts, n)) for n, m in layers]
        was_training = self.model.training
        self.model.train()  # the statistics training sees, batch stats included
        try:
            # Gradients of a probe batch, measured without touching the training step:
            # torch.autograd.grad leaves every .grad (and the optimizer) alone.
            params = [m.weight for _, m in layers]
            loss = F.cross_entropy(self.model(x), y)
            grads = torch.autograd.grad(loss, params)
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        logs: dict[str, float] = {}
        norms = [g.norm().item() for g in grads]
        for (name, _), gn in zip(layers, norms):
            logs[f"bn/grad_norm/{name}"] = gn
        for name, a in acts.items():
            logs[f"bn/act_mean/{name}"] = a.mean().item()
            logs[f"bn/act_std/{name}"] = a.std().item()
            if trainer.logger is not None:
                trainer.logger.histogram(f"bn/pre_activation/{name}", a, epoch)
        logs["bn/grad_ratio_first_last"] = norms[0] / max(norms[-1], 1e-30)
        logs["bn/act_std_last"] = acts[layers[-2][0]].std().item() if len(layers) > 1 else 0.0
        self.last = {k: logs[k] for k in ("bn/grad_ratio_first_last", "bn/act_std_last")}
        return logs


def _capture(store: dict, name: str):
    def hook(module, inputs, output):
        store[name] = output.detach()

    return hook


def run(ctx) -> dict[str, float]:
    model = ctx.build_model()
    x, y = ctx.data.train
    g = torch.Generator().manual_seed(int(ctx.cfg.seed))
    idx = torch.randperm(len(y), generator=g)[: min(256, len(y))].to(y.device)
    task = BNDiagnosticsTask(model, (x[idx], y[idx]), enabled=bool(ctx.cfg.bn.diagnostics))
    ctx.fit(task)
    metrics = ctx.classification_metrics(task, model)
    if task.enabled:
        task.on_epoch_end(ctx.trainer(), 0)  # end values on the best weights
        metrics.update(task.last)
    return metrics
