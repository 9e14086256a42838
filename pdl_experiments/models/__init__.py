"""A small, readable model zoo. Models are built from the config's `model._target_` with
the dataset's `info` and the batch-norm switch `norm`, so one config fits every dataset.

Every model of the zoo registers itself in `registry.MODELS` with its kind (an image
classifier, a sequence-to-sequence model, an image generator); importing this package
imports them all, so the registry lists the whole zoo (the tests build every entry).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import cnn, gan, mlp, plain_deep, resnet, seq2seq, transformer, vgg  # noqa: F401  (each registers itself)
from .common import count_params
from .norm import BatchNormSpec, CourseBatchNorm


def build_model(model_cfg: Any, info, norm: BatchNormSpec, **extra) -> nn.Module:
    """Instantiate `model_cfg` (a `_target_` config) for this data and norm switch."""
    from hydra.utils import instantiate

    # Partial first: instantiate() would turn the `info`/`norm` objects into configs.
    factory = instantiate(model_cfg, _partial_=True, _convert_="all")
    return factory(info=info, norm=norm, **extra)


__all__ = ["BatchNormSpec", "CourseBatchNorm", "build_model", "count_params"]
