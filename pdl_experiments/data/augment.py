"""The course's five augmentations with torchvision.transforms.v2, on the training split only.

Each image of a batch draws its own random parameters (a v2 transform called on a whole
batch would apply one draw to all of it).
"""

from __future__ import annotations

from typing import Any

import torch


class AugmentationError(ValueError):
    """An augmentation that cannot apply to this data (one line, says what to do)."""


def build_augmentation(cfg: Any, in_shape: tuple[int, ...]) -> Augment | None:
    """A callable over image batches (B, C, H, W), or None when every operation is off."""
    channels, h, w = in_shape
    if cfg.saturation > 0 and channels == 1:
        # torchvision silently returns 1-channel images unchanged: say so instead.
        raise AugmentationError(
            f"augmentation.saturation={cfg.saturation} does nothing to this 1-channel "
            "(grayscale) dataset; use it with a colour dataset or set augmentation.saturation=0"
        )
    if (
        cfg.crop_scale >= 1.0
        and cfg.mirror == 0
        and cfg.rotation == 0
        and cfg.brightness == 0
        and cfg.saturation == 0
    ):
        return None  # and skip importing torchvision's transforms (seconds on a small CPU)
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
    return Augment(v2.Compose(ops))


class Augment:
    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1]
        return torch.stack([self.transform(img) for img in x]).clamp_(0, 1)

    def __repr__(self) -> str:
        return f"Augment({self.transform})"
