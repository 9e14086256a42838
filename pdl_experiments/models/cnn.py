from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import classifier_head, conv_bn_relu, image_input
from .norm import BatchNormSpec


@MODELS.register("cnn", kind="image_classifier")
class SmallCNN(nn.Module):
    """[conv3x3 -> BN -> ReLU -> maxpool2] per width, then global average pool and an MLP head.

    Pools stop once the map is 2x2, so the same net fits 8x8 digits and 32x32 CIFAR.
    """

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.normalize, c, size = image_input(info)
        layers: list[nn.Module] = []
        for width in channels:
            layers.append(conv_bn_relu(c, width, norm))
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier_head(c, hidden, info.num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.pool(self.features(self.normalize(x))))
