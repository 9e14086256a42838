"""models/gan.py: the GAN models (registered as image generators) fit every image size."""

from __future__ import annotations

import pytest
import torch

import pdl_experiments.models  # noqa: F401  (fills the registry)
from pdl_experiments.registry import MODELS

from helpers import compose

GAN_MODELS = {e.name: e.target for e in MODELS.entries() if e.kind == "image_generator"}


@pytest.mark.parametrize("name", sorted(GAN_MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_gan_models_fit_every_image_size(name, shape):
    from pdl_experiments.data import DataInfo
    from pdl_experiments.models import BatchNormSpec, build_model
    from pdl_experiments.models.gan import GAN

    assert compose([f"model={name}"]).model._target_ == GAN_MODELS[name]  # registry = configs
    info = DataInfo("x", in_shape=shape, num_classes=10, mean=(0.5,) * shape[0], std=(0.25,) * shape[0])
    gan = build_model(compose([f"model={name}"]).model, info, BatchNormSpec(), latent_dim=16)
    assert isinstance(gan, GAN)
    fake = gan(torch.randn(5, 16))
    assert fake.shape == (5, *shape)
    assert fake.min() >= 0 and fake.max() <= 1  # the dataset's pixel range
    assert gan.discriminator(fake).shape == (5,)
    # DCGAN init: conv/linear weights ~ N(0, 0.02)
    w = torch.cat(
        [
            m.weight.flatten()
            for m in gan.modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))
        ]
    )
    assert 0.015 < w.std().item() < 0.025
