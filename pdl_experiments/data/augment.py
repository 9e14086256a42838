"""The course's five augmentations, batched on the data's device, on the training split only.

A batch (B, C, H, W) in [0, 1] is augmented in a few kernel calls, each image still drawing
its own parameters from the ranges torchvision's transforms draw them from:

* crop-and-resize (`crop_scale`), mirror (`mirror`) and rotation (`rotation`) are folded into
  one affine map per image: one `affine_grid` and one `grid_sample` for the whole batch
  (bilinear; pixels a rotation brings in from outside the crop are 0, as torchvision fills);
* brightness and saturation (`brightness`, `saturation`) are per-image factors broadcast over
  the batch (ColorJitter's formulas: `b * x`; `s * x + (1 - s) * gray(x)`, clamped to [0, 1]).

Why not kornia: its per-image augmentations ran at 18,400 images/s on the issue's 2-core CPU
(CIFAR shape, batch 256, the five operations), 5.8x the per-image torchvision loop; one
affine grid per batch is ~30x (docs/performance.md has the numbers).

The random parameters come from a generator, never from the global RNG of the run: the
training loader derives one per batch from (a key its shuffling generator draws at the start
of each epoch, the batch index, the rank), see `batch_generator`. A run is therefore
reproducible and a resume mid-epoch replays exactly the same augmented batches without any
extra state. `draw_params` gives the drawn parameters themselves (the tests check them).

`PerImageAugment` is the previous implementation (torchvision v2 transforms applied image by
image in a Python loop), kept as the reference scripts/bench.py measures against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import PdlError


class AugmentationError(PdlError, ValueError):
    """An augmentation that cannot apply to this data (one line, says what to do)."""


_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
_TRIES = 10  # RandomResizedCrop draws up to 10 crops and keeps the first that fits
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _check(cfg: Any, channels: int) -> bool:
    """False when every operation is off; AugmentationError for saturation on grayscale."""
    if cfg.saturation > 0 and channels == 1:
        # torchvision silently returns 1-channel images unchanged: say so instead.
        raise AugmentationError(
            f"augmentation.saturation={cfg.saturation} does nothing to this 1-channel "
            "(grayscale) dataset; use it with a colour dataset or set augmentation.saturation=0"
        )
    return not (
        cfg.crop_scale >= 1.0
        and cfg.mirror == 0
        and cfg.rotation == 0
        and cfg.brightness == 0
        and cfg.saturation == 0
    )


def build_augmentation(cfg: Any, in_shape: tuple[int, ...]) -> BatchAugment | None:
    """A callable over image batches (B, C, H, W), or None when every operation is off."""
    if not _check(cfg, in_shape[0]):
        return None
    return BatchAugment(cfg, in_shape)


# ------------------------------------------------------------------------- the parameters
@dataclass
class AugmentParams:
    """Each image's draw; (B,) tensors unless noted. Neutral values where an operation is off."""

    crop_size: torch.Tensor  # (B, 2): crop width and height as fractions of the image's
    crop_center: torch.Tensor  # (B, 2): crop centre (x, y) in [-1, 1] (grid_sample's units)
    flip: torch.Tensor  # bool: mirrored
    angle: torch.Tensor  # degrees, counter-clockwise
    brightness: torch.Tensor  # factor: x * b
    saturation: torch.Tensor  # factor: blend with the grayscale image

    @property
    def crop_area(self) -> torch.Tensor:
        """The crop's share of the image area (RandomResizedCrop's `scale`)."""
        return self.crop_size.prod(1)

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(*(getattr(self, f.name).to(device) for f in fields(self)))


def draw_params(
    cfg: Any, n: int, in_shape: tuple[int, ...], generator: torch.Generator | None = None
) -> AugmentParams:
    """The parameters of `n` images, drawn on the CPU from `generator` (None: the global RNG).

    Ranges, as torchvision's: crop area uniform in [crop_scale, 1] and log aspect ratio
    uniform in [log 3/4, log 4/3] (the first of 10 draws that fits, else the whole image),
    the crop's position uniform where it fits; a flip with probability `mirror`; an angle
    uniform in [-rotation, rotation]; brightness and saturation factors uniform in
    [max(0, 1 - strength), 1 + strength]. One draw of uniforms for the whole batch, so the
    values an image gets do not depend on which operations are on.
    """
    _, h, w = in_shape
    u = torch.rand(n, 2 * _TRIES + 6, generator=generator, dtype=torch.float64)
    size = torch.ones(n, 2, dtype=torch.float64)
    if cfg.crop_scale < 1.0:
        area = cfg.crop_scale + (1.0 - cfg.crop_scale) * u[:, :_TRIES]  # (n, tries)
        lo, hi = math.log(_RATIO[0]), math.log(_RATIO[1])
        ratio = torch.exp(lo + (hi - lo) * u[:, _TRIES : 2 * _TRIES])
        cw = torch.sqrt(area * ratio * (h / w))  # width / W, with cw * ch = area
        ch = torch.sqrt(area / ratio * (w / h))
        fits = (cw <= 1.0) & (ch <= 1.0)
        first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first draw that fits
        fallback = torch.tensor(_fallback_crop(h, w), dtype=torch.float64)
        size = torch.where(
            fits.any(1, keepdim=True),
            torch.cat([cw.gather(1, first), ch.gather(1, first)], 1),
            fallback,
        )
    center = (1.0 - size) * (2.0 * u[:, 2 * _TRIES : 2 * _TRIES + 2] - 1.0)
    v = u[:, 2 * _TRIES + 2 :]
    flip = v[:, 0] < cfg.mirror
    angle = float(cfg.rotation) * (2.0 * v[:, 1] - 1.0)
    brightness = _factor(v[:, 2], float(cfg.brightness))
    saturation = _factor(v[:, 3], float(cfg.saturation))
    f32 = torch.float32
    return AugmentParams(size.to(f32), center.to(f32), flip, angle.to(f32), brightness, saturation)


def _factor(u: torch.Tensor, strength: float) -> torch.Tensor:
    lo = max(0.0, 1.0 - strength)
    return (lo + (1.0 + strength - lo) * u).to(torch.float32)


def _fallback_crop(h: int, w: int) -> tuple[float, float]:
    """RandomResizedCrop's crop when no draw fits: the whole image, or its centre at the
    nearest allowed aspect ratio (width, height as fractions)."""
    if w / h < _RATIO[0]:
        return 1.0, min(1.0, w / _RATIO[0] / h)
    if w / h > _RATIO[1]:
        return min(1.0, h * _RATIO[1] / w), 1.0
    return 1.0, 1.0


# ------------------------------------------------------------------------- applying them
def apply_params(x: torch.Tensor, p: AugmentParams, cfg: Any) -> torch.Tensor:
    """The batch x (B, C, H, W) in [0, 1] with each image's parameters applied."""
    b, c, h, w = x.shape
    p = p.to(x.device)
    crop, rotate = cfg.crop_scale < 1.0, cfg.rotation > 0
    inside = None
    if crop or rotate:
        x, inside = _warp(x, p, rotate)
    elif cfg.mirror > 0:  # mirror alone: an exact flip, no resampling
        x = torch.where(p.flip.view(b, 1, 1, 1), x.flip(-1), x)
    if cfg.brightness > 0 or cfg.saturation > 0 or inside is not None:
        x = _colour(x, p, cfg, inside)
    return x


def _colour(x: torch.Tensor, p: AugmentParams, cfg: Any, inside: torch.Tensor | None) -> torch.Tensor:
    """Brightness, saturation and the rotation's blank corners in one multiply-add per pixel.

    Both colour operations are linear in x: brightness `b * x`, saturation
    `s * x + (1 - s) * gray(x)`; together `x * (b s) + gray(x) * (b (1 - s))`, then clamped
    to [0, 1]. (torchvision also clamps between the two: the results differ only where the
    brightness factor pushed a pixel above 1 before its saturation changed.)
    """
    b = len(x)
    dt = x.dtype
    factor: torch.Tensor = torch.ones(b, 1, 1, 1, device=x.device, dtype=dt)
    if cfg.brightness > 0:
        factor = p.brightness.to(dt).view(b, 1, 1, 1)
    offset = None
    if cfg.saturation > 0:
        s = p.saturation.to(dt).view(b, 1, 1, 1)
        gray = x[:, 0:1] * _GRAY[0]
        gray.add_(x[:, 1:2], alpha=_GRAY[1]).add_(x[:, 2:3], alpha=_GRAY[2])  # (B, 1, H, W)
        offset = gray.mul_(factor * (1.0 - s))
        factor = factor * s
    if inside is not None:
        factor = factor * inside  # (B, 1, H, W)
        offset = None if offset is None else offset.mul_(inside)
    out = x * factor
    if offset is not None:
        out.add_(offset)
    return out.clamp_(0.0, 1.0)


def _warp(x: torch.Tensor, p: AugmentParams, rotate: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop-and-resize, mirror and rotation as one affine map per image, one grid_sample.

    The output pixel at u (grid units, [-1, 1]) shows the input at
    `centre + size * mirror(rotation(u))`, which is torchvision's order (crop, then flip,
    then rotate). The rotation is one in pixel units written in grid units (x spans W
    pixels, y spans H). With a rotation, also the mask (B, 1, H, W) of the output pixels
    that lie inside the rotated crop: the others are 0 (what torchvision fills in).
    """
    b, c, h, w = x.shape
    dt = x.dtype
    size, center = p.crop_size.to(dt), p.crop_center.to(dt)
    sign = 1.0 - 2.0 * p.flip.to(dt)  # -1: mirrored
    if rotate:
        rad = p.angle.to(dt) * (math.pi / 180.0)
        cos, sin = torch.cos(rad), torch.sin(rad)
        # (B, 2, 2): output point -> the un-rotated, un-mirrored crop's point
        rot = torch.stack(
            [torch.stack([sign * cos, sign * -sin * (h / w)], 1), torch.stack([sin * (w / h), cos], 1)], 1
        )
        linear = rot * size[:, :, None]
    else:
        rot = None
        linear = torch.diag_embed(torch.stack([sign, torch.ones_like(sign)], 1) * size)
    theta = torch.cat([linear, center[:, :, None]], 2)  # (B, 2, 3), as affine_grid takes it
    out = F.grid_sample(
        x, _affine_grid(theta, h, w), mode="bilinear", padding_mode="border", align_corners=False
    )
    if rot is None:
        return out, None
    # |point| <= 1 on both axes of the crop's own grid units: max(|x|, |y|) <= 1, as 1.0 / 0.0
    gx, gy = _axis_maps(torch.cat([rot, torch.zeros_like(center)[:, :, None]], 2), h, w)
    inside = torch.maximum(gx.abs_(), gy.abs_(), out=gx).le_(1.0)
    return out, inside.unsqueeze(1)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """F.affine_grid(theta, (B, C, h, w), align_corners=False), written as broadcast
    multiply-adds: ~4x faster on a CPU than affine_grid's batched matmul."""
    grid = torch.empty(len(theta), h, w, 2, device=theta.device, dtype=theta.dtype)
    _axis_maps(theta, h, w, out=grid)
    return grid


def _axis_maps(theta: torch.Tensor, h: int, w: int, out: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Each axis of affine_grid's points (B, H, W) for theta (B, 2, 3); into out[..., k] if given."""
    dev, dt = theta.device, theta.dtype
    xs = (torch.arange(w, device=dev, dtype=dt) * 2 + 1) / w - 1  # pixel centres in grid units
    ys = (torch.arange(h, device=dev, dtype=dt) * 2 + 1) / h - 1
    maps = []
    for k in range(2):
        row = theta[:, k]  # (B, 3)
        per_col = (row[:, 0:1] * xs)[:, None, :]  # (B, 1, W)
        per_row = (row[:, 1:2] * ys + row[:, 2:3])[:, :, None]  # (B, H, 1)
        maps.append(torch.add(per_col, per_row, out=None if out is None else out[..., k]))
    return maps


class BatchAugment:
    """The configured operations over image batches: `aug(x, generator)`.

    `generator` (a CPU torch.Generator) supplies the batch's random parameters; None draws
    them from the global RNG (the TensorBoard preview, on a forked RNG, does that).
    """

    def __init__(self, cfg: Any, in_shape: tuple[int, ...]):
        _check(cfg, in_shape[0])
        self.cfg = _Ops(
            float(cfg.crop_scale),
            float(cfg.mirror),
            float(cfg.rotation),
            float(cfg.brightness),
            float(cfg.saturation),
        )
        self.in_shape = tuple(in_shape)

    def params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        return draw_params(self.cfg, n, self.in_shape, generator)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return apply_params(x, self.params(len(x), generator), self.cfg)

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg})"


@dataclass(frozen=True)
class _Ops:
    """The five strengths as plain floats (an OmegaConf attribute read costs ~10 us)."""

    crop_scale: float
    mirror: float
    rotation: float
    brightness: float
    saturation: float


# ------------------------------------------------------------------------- per-batch seeds
_MASK = (1 << 63) - 1


def batch_generator(key: int, batch: int, rank: int = 0) -> torch.Generator:
    """The generator of one batch's parameters, a pure function of its arguments.

    `key`: what the training loader's shuffling generator drew at the start of the epoch
    (`epoch_key`), so it depends on the run's seed and the epoch; `batch`: the index of the
    batch in the epoch; `rank`: the process's rank under DDP (each rank its own draws).
    """
    z = (key + (batch + 1) * 0x9E3779B97F4A7C15 + rank * 0xD1B54A32D192ED03) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK  # splitmix64's mixing
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return torch.Generator().manual_seed(z ^ (z >> 31))


def epoch_key(generator: torch.Generator | None) -> int:
    """One draw of the loader's generator at the start of an epoch: the epoch's key."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


# ------------------------------------------------------------------------- the reference
def build_per_image_augmentation(cfg: Any, in_shape: tuple[int, ...]) -> PerImageAugment | None:
    """The previous implementation: torchvision v2 transforms image by image (the reference)."""
    channels, h, w = in_shape
    if not _check(cfg, channels):
        return None
    from torchvision.transforms import v2

    ops: list = []
    if cfg.crop_scale < 1.0:
        ops.append(v2.RandomResizedCrop((h, w), scale=(cfg.crop_scale, 1.0), antialias=True))
    if cfg.mirror > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.mirror))
    if cfg.rotation > 0:
        ops.append(v2.RandomRotation(cfg.rotation))
    if cfg.brightness > 0 or cfg.saturation > 0:
        ops.append(v2.ColorJitter(brightness=cfg.brightness or None, saturation=cfg.saturation or None))
    return PerImageAugment(v2.Compose(ops))


class PerImageAugment:
    """A v2 transform per image (a v2 transform called on a batch draws once for all of it)."""

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # (B, C, H, W) in [0, 1]; draws from the global RNG (v2 transforms take no generator)
        return torch.stack([self.transform(img) for img in x]).clamp_(0, 1)

    def __repr__(self) -> str:
        return f"PerImageAugment({self.transform})"
