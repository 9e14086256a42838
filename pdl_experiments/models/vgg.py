from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import classifier_head, conv_bn_relu, image_input
from .norm import BatchNormSpec


@MODELS.register("vgg", kind="image_classifier")
class VGG(nn.Module):
    """A small VGG: stacks of 3x3 convs separated by 2x2 max pools ("M" in the layout)."""

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        layout: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, 128, "M"),
        hidden: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.normalize, c, size = image_input(info)
        layers: list[nn.Module] = []
        for item in layout:
            if item == "M":
                if size >= 2:  # on 8x8 digits the third pool would empty the map
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers.append(conv_bn_relu(c, int(item), norm))
            c = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier_head(c, hidden, info.num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.normalize(x))))
