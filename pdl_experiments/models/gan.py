"""Generator/discriminator pairs for technique=gan, sized from the dataset's DataInfo.

A model config (`model=dcgan`, `model=gan_mlp`) builds both networks at once, so one
config fits 8x8 digits, 28x28 MNIST and 32x32 CIFAR:

    G: z ~ N(0, I) (B, latent_dim) -> images (B, C, H, W) in [0, 1]  (sigmoid output,
       the dataset's pixel range, so real and fake images live on the same scale)
    D: images (B, C, H, W) -> one logit per image (B,): real (> 0) or fake (< 0)

The conv pair follows the DCGAN recipe (Radford et al., 2016): batch norm in G (not on its
output) and in D (not on its input layer), ReLU in G, LeakyReLU(0.2) in D. The MLP pair has
batch norm in G only and dropout in D (as the original GAN). Both draw their weights from
N(0, 0.02) and BN scales from N(1, 0.02); `bn.enabled=false` removes the batch norms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import DataInfo
from ..registry import MODELS
from .common import Normalize
from .norm import BatchNormSpec, is_norm


class GAN(nn.Module):
    """A generator and its discriminator; `forward(z)` generates."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent_dim) -> (B, C, H, W)
        return self.generator(z)


def dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation: every weight from N(0, 0.02), BN scale from N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif is_norm(m) and m.weight is not None and m.bias is not None:  # affine norm layers
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def upsampling_steps(size: tuple[int, int], max_steps: int = 3) -> int:
    """How many stride-2 steps take a small seed map to `size` (8 -> 2, 28 -> 2, 32 -> 3).

    Halve while both sides stay even and at least 2: the conv nets then grow from a 2x2
    (digits), 7x7 (MNIST) or 4x4 (CIFAR) map.
    """
    h, w = size
    steps = 0
    while steps < max_steps and h % 2 == 0 and w % 2 == 0 and h >= 4 and w >= 4:
        h, w, steps = h // 2, w // 2, steps + 1
    return steps


# ---------------------------------------------------------------------------------------
class ConvGenerator(nn.Module):
    """Linear to a (width * 2^(n-1), h0, w0) map, then n x [ConvT 4x4 stride 2 -> BN -> ReLU].

    The last transposed conv outputs the image channels through a sigmoid.
    """

    def __init__(self, info: DataInfo, norm: BatchNormSpec, latent_dim: int, width: int):
        super().__init__()
        c, h, w = info.in_shape
        n = max(upsampling_steps((h, w)), 1)
        self.seed_shape = (width * 2 ** (n - 1), h >> n, w >> n)
        ch, h0, w0 = self.seed_shape
        self.project = nn.Sequential(
            nn.Linear(latent_dim, ch * h0 * w0, bias=norm.bias), norm(ch * h0 * w0, 1), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            out = c if last else ch // 2
            layers.append(nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1, bias=last or norm.bias))
            layers += [nn.Sigmoid()] if last else [norm(out, 2), nn.ReLU(inplace=True)]
            ch = out
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, H, W)
        return self.net(self.project(z).view(len(z), *self.seed_shape))


class ConvDiscriminator(nn.Module):
    """n x [Conv 4x4 stride 2 -> (BN) -> LeakyReLU -> (Dropout)], then a linear logit;
    G's mirror image."""

    def __init__(self, info: DataInfo, norm: BatchNormSpec, width: int, dropout: float = 0.0):
        super().__init__()
        c, h, w = info.in_shape
        n = max(upsampling_steps((h, w)), 1)
        # The same input scaling the classifiers use: D sees standardised pixels.
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = []
        ch_in, ch = c, width
        for i in range(n):
            first = i == 0  # DCGAN: no BN on the layer that sees the images
            layers.append(nn.Conv2d(ch_in, ch, 4, stride=2, padding=1, bias=first or norm.bias))
            if not first:
                layers.append(norm(ch, 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout:
                layers.append(nn.Dropout(dropout))
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch_in * (h >> n) * (w >> n), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        return self.head(torch.flatten(self.features(self.normalize(x)), 1)).squeeze(1)


@MODELS.register("dcgan", kind="image_generator")
def dcgan(
    info: DataInfo, norm: BatchNormSpec, latent_dim: int = 64, width: int = 64, dropout: float = 0.0
) -> GAN:
    """DCGAN-style conv pair; `width` is D's first and G's last hidden channel count,
    `dropout` is in D only."""
    _check_image(info)
    return GAN(
        ConvGenerator(info, norm, latent_dim, width),
        ConvDiscriminator(info, norm, width, dropout),
        latent_dim,
    )


# ---------------------------------------------------------------------------------------
class MLPGenerator(nn.Module):
    """z -> [Linear -> BN -> ReLU] * len(hidden) -> Linear -> sigmoid -> (C, H, W)."""

    def __init__(self, info: DataInfo, norm: BatchNormSpec, latent_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(info.in_shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h, bias=norm.bias), norm(h, 1), nn.ReLU(inplace=True)]
            width = h
        layers += [nn.Linear(width, _numel(info.in_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, Z) -> (B, C, H, W)
        return self.net(z).view(len(z), *self.out_shape)


class MLPDiscriminator(nn.Module):
    """Flatten -> [Linear -> LeakyReLU -> Dropout] * len(hidden) -> Linear logit.

    No batch norm: a plain MLP discriminator, as in the original GAN, judges every image on
    its own; dropout (as there) keeps it from memorising the few real images.
    """

    def __init__(self, info: DataInfo, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        layers: list[nn.Module] = [nn.Flatten()]
        width = _numel(info.in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2, inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        return self.net(self.normalize(x)).squeeze(1)


@MODELS.register("gan_mlp", kind="image_generator")
def mlp_gan(
    info: DataInfo,
    norm: BatchNormSpec,
    latent_dim: int = 64,
    hidden: Sequence[int] = (256, 256),
    dropout: float = 0.0,
) -> GAN:
    """Fully connected pair; D's layers are G's in reverse order, `dropout` in D only."""
    _check_image(info)
    return GAN(
        MLPGenerator(info, norm, latent_dim, hidden),
        MLPDiscriminator(info, list(hidden)[::-1], dropout),
        latent_dim,
    )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _check_image(info: DataInfo) -> None:
    if info.kind != "image" or len(info.in_shape) != 3:
        from ..config import ConfigError

        raise ConfigError(f"the GAN models generate images; dataset {info.name} is {info.kind} data")
