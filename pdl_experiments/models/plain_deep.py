from __future__ import annotations

import torch
from torch import nn

from ..data import DataInfo
from .common import Normalize
from .norm import BatchNormSpec


class PlainDeep(nn.Module):
    """`depth` conv3x3 layers in a row, no skip connections: the net BN is for.

    Initialised the old way (small uniform weights, no careful scaling), so without batch
    norm the signal and its gradient shrink layer after layer and training stalls; with BN
    every layer's input is re-centred and re-scaled and the same net trains.
    """

    def __init__(self, info: DataInfo, norm: BatchNormSpec, depth: int = 10, width: int = 32):
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = []
        c = info.in_shape[0]
        for _ in range(depth):
            conv = nn.Conv2d(c, width, 3, padding=1, bias=norm.bias)
            layers += [conv, norm(width, 2), nn.ReLU(inplace=True)]
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, info.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Var(w) = 1 / (3 * fan_in): a third of what ReLU nets need (He: 2 / fan_in),
                # so each layer scales the signal by about 1/6 in variance.
                nn.init.uniform_(m.weight, -1 / m.weight[0].numel() ** 0.5, 1 / m.weight[0].numel() ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.normalize(x))), 1))
