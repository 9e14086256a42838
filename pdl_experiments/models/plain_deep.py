from __future__ import annotations

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import Normalize
from .norm import BatchNormSpec

INITS = ("normal", "kaiming", "torch")


@MODELS.register("plain_deep", kind="image_classifier")
class PlainDeep(nn.Module):
    """`depth` conv3x3 blocks in a row, no skip connections, no pooling: the net BN is for.

    By default the conv weights are initialised the pre-2015 way, N(0, init_std^2) with
    init_std = 0.01 (AlexNet's recipe), whatever the layer's fan-in. With width 16 a conv
    sees 16 * 9 = 144 inputs, so each block scales the input-dependent part of the signal
    by about 0.01 * sqrt(144 / 2) ~ 0.085 (the /2 is the ReLU), and its gradient by as
    much on the way back: after 10 blocks both are ~1e-10 of what they started as. The
    network's output no longer depends on its input, the first layers' gradients sit far
    below Adam's eps (1e-8) and training stalls at chance. Batch norm re-scales every
    block's pre-activations to unit variance, which makes the net blind to the weights'
    scale: the very same initialisation trains to ~99 %.

    `init=kaiming` (He: N(0, 2 / fan_in)) is the other cure, without BN; `init=torch`
    keeps PyTorch's default (uniform, Var = 1 / (3 fan_in)), which shrinks the signal only
    mildly and trains without BN too, just more slowly.
    """

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        depth: int = 10,
        width: int = 16,
        init: str = "normal",
        init_std: float = 0.01,
        stem_stride: int = 1,
    ):
        super().__init__()
        if depth < 1 or width < 1 or stem_stride < 1:
            from ..config import ConfigError

            raise ConfigError(
                f"model.depth={depth} model.width={width} model.stem_stride={stem_stride}: "
                "expected integers >= 1"
            )
        if init not in INITS or init_std <= 0:
            from ..config import ConfigError

            raise ConfigError(
                f"model.init={init} model.init_std={init_std}: expected init one of "
                f"{', '.join(INITS)} and init_std > 0"
            )
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = []
        c = info.in_shape[0]
        for i in range(depth):
            # A stride-2 first conv halves the map once (28x28 MNIST -> 14x14): 4x less
            # compute per layer, the same depth and no skip connection, so the same idea.
            conv = nn.Conv2d(c, width, 3, stride=stem_stride if i == 0 else 1, padding=1, bias=norm.bias)
            layers += [conv, norm(width, 2), nn.ReLU(inplace=True)]
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, info.num_classes)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d) and init == "normal":
                nn.init.normal_(m.weight, 0.0, init_std)
            elif isinstance(m, nn.Conv2d) and init == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        # Biases (present only without BN) keep PyTorch's default, as does the classifier.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))  # (B, width, H/s, W/s): no pooling on the way
        return self.fc(torch.flatten(self.pool(x), 1))  # (B, num_classes)
