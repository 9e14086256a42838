"""A small, readable model zoo. Models are built from the config's `model._target_` with
the dataset's `info` and the batch-norm switch `norm`, so one config fits every dataset."""

from __future__ import annotations

from typing import Any

from torch import nn

from .common import count_params
from .norm import BatchNormSpec, CourseBatchNorm

# name -> class path: the zoo, listed (tests build every entry).
IMAGE_MODELS = {
    "mlp": "pdl_experiments.models.mlp.MLP",
    "cnn": "pdl_experiments.models.cnn.SmallCNN",
    "vgg": "pdl_experiments.models.vgg.VGG",
    "resnet": "pdl_experiments.models.resnet.ResNet",
    "plain_deep": "pdl_experiments.models.plain_deep.PlainDeep",
}


def build_model(model_cfg: Any, info, norm: BatchNormSpec, **extra) -> nn.Module:
    """Instantiate `model_cfg` (a `_target_` config) for this data and norm switch."""
    from hydra.utils import instantiate

    # Partial first: instantiate() would turn the `info`/`norm` objects into configs.
    factory = instantiate(model_cfg, _partial_=True, _convert_="all")
    return factory(info=info, norm=norm, **extra)


__all__ = ["BatchNormSpec", "CourseBatchNorm", "IMAGE_MODELS", "build_model", "count_params"]
