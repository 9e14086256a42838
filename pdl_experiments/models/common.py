"""Pieces the image models share: input normalisation inside the model, conv blocks."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

from .norm import BatchNormSpec


class Normalize(nn.Module):
    """(x - mean) / std with the training split's statistics, as the model's first layer.

    Keeping it inside the model means every consumer (attacks above all) works in pixel
    units in [0, 1]: an epsilon of 0.1 is a tenth of the pixel range.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def image_input(info) -> tuple[Normalize, int, int]:
    """A conv net's first layer (normalisation) and its input's channels and side length."""
    return Normalize(info.mean, info.std), info.in_shape[0], info.in_shape[1]


def classifier_head(c: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Pooled features (B, c, 1, 1) -> flatten -> hidden -> ReLU [-> dropout] -> class logits."""
    head: list[nn.Module] = [nn.Flatten(), nn.Linear(c, hidden), nn.ReLU(inplace=True)]
    if dropout:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*head)


def conv_bn_relu(c_in: int, c_out: int, norm: BatchNormSpec, k: int = 3, stride: int = 1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=norm.bias),
        norm(c_out, 2),
        nn.ReLU(inplace=True),
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """Conv and linear layers in registration order: what pruning masks and BN diagnostics watch."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def removable_blocks(model: nn.Module) -> list[int]:
    """Residual blocks that can become the identity: same shape in and out, identity shortcut."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        return []
    return [i for i, b in enumerate(blocks) if isinstance(getattr(b, "shortcut", None), nn.Identity)]


@contextmanager
def blocks_removed(model: nn.Module, idxs: Iterable[int]):
    """Temporarily replace blocks by the identity (for scoring)."""
    blocks = cast(nn.ModuleList, model.blocks)  # removable_blocks: only models with a ModuleList
    saved = {i: blocks[i] for i in idxs}
    try:
        for i in saved:
            blocks[i] = nn.Identity()
        yield model
    finally:
        for i, b in saved.items():
            blocks[i] = b
