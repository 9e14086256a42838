from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import Normalize, conv_bn_relu
from .norm import BatchNormSpec


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (He et al., CIFAR variant)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: BatchNormSpec):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=norm.bias)
        self.bn1 = norm(c_out, 2)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=norm.bias)
        self.bn2 = norm(c_out, 2)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=norm.bias), norm(c_out, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@MODELS.register("resnet", kind="image_classifier")
class ResNet(nn.Module):
    """Stem conv, then stages of BasicBlocks (widths w, 2w, 4w; stride 2 between stages).

    `self.blocks` is a flat ModuleList so layer-level pruning can drop any block whose
    input and output shapes agree (the ones without a projection shortcut).
    """

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        blocks_per_stage: Sequence[int] = (2, 2, 2),
        width: int = 16,
    ):
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        self.stem = conv_bn_relu(info.in_shape[0], width, norm)
        blocks: list[nn.Module] = []
        c = width
        for stage, n in enumerate(blocks_per_stage):
            c_out = width * 2**stage
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(c, c_out, stride, norm))
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(x))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(self.pool(x), 1))
