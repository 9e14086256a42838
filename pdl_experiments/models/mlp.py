from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import Normalize
from .norm import BatchNormSpec


@MODELS.register("mlp", kind="image_classifier")
class MLP(nn.Module):
    """Flatten -> [Linear -> BN -> ReLU -> Dropout] * len(hidden) -> Linear."""

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = [nn.Flatten()]
        width = 1
        for d in info.in_shape:
            width *= d
        for h in hidden:
            layers += [nn.Linear(width, h, bias=norm.bias), norm(h, 1), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.features(self.normalize(x)))
