"""Batch norm, switchable: torch's nn.BatchNorm, the course's hand-written layer, or off.

The course's recipe, per feature (channel) over the batch (and spatial positions):
    mu = mean(x),  var = mean((x - mu)^2)                  # biased batch variance
    y  = gamma * (x - mu) / sqrt(var + eps) + beta          # gamma, beta learned
    E   <- (1 - m) * E   + m * mu                           # m = momentum = 0.1:
    Var <- (1 - m) * Var + m * var                          #   0.9 * old + 0.1 * batch
and at inference y = gamma * (x - E) / sqrt(Var + eps) + beta.

torch's nn.BatchNorm normalises with the same biased variance but feeds the *unbiased* one,
var * n / (n - 1) with n = N (BatchNorm1d on (N, C)) or N * H * W (BatchNorm2d), into
running_var. So the two layers give the same outputs in training mode, the same
running_mean, and running_var values that differ by exactly n / (n - 1) after one update
from the initial 1 (and by a mix of such factors after several); their eval-mode outputs
therefore differ slightly too unless the running variances are synced
(tests/models/test_norm.py checks all of this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import nn


class CourseBatchNorm(nn.Module):
    """Batch norm written out with the course's formulas; works for (N, C) and (N, C, ...)."""

    running_mean: torch.Tensor  # buffers, registered in __init__
    running_var: torch.Tensor

    weight: nn.Parameter | None
    bias: nn.Parameter | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        else:  # normalisation only (DARTS' search cell)
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))  # E
        self.register_buffer("running_var", torch.ones(num_features))  # Var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics over every axis but the channel axis (1).
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()  # statistics in float32 even under bf16 autocast, as nn.BatchNorm does
        if self.training:
            mu = x32.mean(dim=dims)  # (C,)
            var = x32.var(dim=dims, unbiased=False)  # (C,) biased: the course's Var
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mu)
                self.running_var.mul_(1 - m).add_(m * var)
        else:
            mu, var = self.running_mean, self.running_var
        x_hat = (x32 - mu.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.weight is None or self.bias is None:
            return x_hat.to(x.dtype)
        return (self.weight.view(shape) * x_hat + self.bias.view(shape)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


NormFactory = Callable[[int, int], nn.Module]  # (num_features, dims) -> layer


@dataclass
class BatchNormSpec:
    """Builds the norm layer every model of the zoo asks for: `norm(channels, dims=2)`."""

    enabled: bool = True
    impl: str = "torch"
    momentum: float = 0.1
    eps: float = 1e-5
    # False: no learned gamma/beta (DARTS' search cell, where a learned scale after each op
    # would let the op rescale itself against its alpha and blur alpha as a ranking).
    affine: bool = True

    @classmethod
    def from_config(cls, bn) -> BatchNormSpec:
        """From a run's `bn` section (BNConfig)."""
        return cls(bool(bn.enabled), str(bn.impl), float(bn.momentum), float(bn.eps))

    def __call__(self, num_features: int, dims: int = 2) -> nn.Module:
        if not self.enabled:
            return nn.Identity()
        if str(self.impl) == "course":
            return CourseBatchNorm(num_features, eps=self.eps, momentum=self.momentum, affine=self.affine)
        cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        return cls(num_features, eps=self.eps, momentum=self.momentum, affine=self.affine)

    @property
    def bias(self) -> bool:
        """A conv/linear followed by BN needs no bias of its own (BN's beta is one)."""
        return not self.enabled


def is_norm(m: nn.Module) -> TypeGuard[nn.modules.batchnorm._BatchNorm | CourseBatchNorm]:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, CourseBatchNorm))
