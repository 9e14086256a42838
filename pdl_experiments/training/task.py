"""What a technique gives the trainer: a Task (timm-style: the step returns a dict), and the
classification task and metrics every image technique starts from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Task(nn.Module):
    """A technique's networks plus its step.

    Override `training_step` (return a dict with `loss`; every other entry is averaged over
    the epoch and logged as train/<key>) and `evaluate` (metrics over a loader, unprefixed).
    Multi-optimizer tasks set `manual_optimization = True`, return several optimizers from
    `configure_optimizers` and call `trainer.optimize(loss, name)` in their step.
    """

    manual_optimization = False

    def configure_optimizers(self, make_optimizer: Callable) -> dict[str, torch.optim.Optimizer]:
        return {"default": make_optimizer(self.parameters())}

    def training_step(self, batch: Any, trainer: Any) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, loader: Any) -> dict[str, float]:
        raise NotImplementedError

    def on_epoch_end(self, trainer: Any, epoch: int) -> dict[str, float]:
        """Extra scalars to log at the end of an epoch (keys carry their own prefix)."""
        return {}

    def restore_architecture(self, state_dict: dict) -> None:
        """Make this task's modules match `state_dict`'s architecture before it is loaded.

        A no-op for tasks whose architecture never changes; pruning overrides it (its
        checkpoints hold fewer channels, removed blocks, packed weight masks).
        """


class ClassificationTask(Task):
    """Cross-entropy on (x, y) batches; the task every image technique starts from."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return F.cross_entropy(logits, y), logits

    def training_step(self, batch, trainer):
        x, y = batch
        loss, logits = self.loss(x, y)
        return {"loss": loss, "acc": accuracy(logits.argmax(1), y)}

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        return classification_metrics(self.model, loader)


def accuracy(predictions: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The share of `predictions` (class indices, e.g. logits.argmax(1)) equal to the labels
    `y`, as a 0-d tensor (no device sync until it is read)."""
    return (predictions == y).float().mean()


@torch.no_grad()
def classification_metrics(model: nn.Module, loader: Any) -> dict[str, float]:
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    n = 0
    for x, y in loader:
        logits = model(x).float()
        loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum").cpu()
        correct = correct + (logits.argmax(1) == y).sum().cpu()
        n += len(y)
    return {"loss": loss_sum.item() / max(n, 1), "acc": correct.item() / max(n, 1)}
