"""Your own images: root/<class name>/<image files>, resized and split train/val/test.

Every image is decoded once, resized to image_size x image_size (aspect ratio is not
kept: the models expect square inputs) and kept in memory as uint8 until the split is
known, so each split is converted to float only once.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..compat import declare
from . import DataError, DataSplits, stratified_split
from .vision import assemble_splits, check_fraction, one_line, resolve_root

# Formats PIL reads everywhere (the same list as torchvision's ImageFolder, plus GIF).
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif",
)  # fmt: skip

_LAYOUT = "expected <root>/<class name>/<image files>"


def _visible(name: str) -> bool:
    """Skip dot-files and dot-folders (.DS_Store, .ipynb_checkpoints, ...)."""
    return not name.startswith(".")


def _class_dirs(root: str) -> list[str]:
    """Class folder names, sorted so label indices are the same on every machine."""
    if not os.path.exists(root):
        raise DataError(f"image folder {root} does not exist; set dataset.root ({_LAYOUT})")
    if not os.path.isdir(root):
        raise DataError(f"image folder {root} is not a directory; {_LAYOUT}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and _visible(e.name))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"image folder {root} needs at least 2 class folders, found {found}; {_LAYOUT}")
    return classes


def _images_in(class_dir: str) -> list[str]:
    """Image files under a class folder, subfolders included, in a stable order."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))  # also fixes walk order
        paths += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    if not paths:
        raise DataError(f"class folder {class_dir} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return paths


def _read_image(path: str, image_size: int, mode: str) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3), upright, in the given PIL mode, resized."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
            im = im.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as err:  # PIL raises many types for bad files (OSError, SyntaxError, ...)
        raise DataError(f"cannot read image {path} ({one_line(err)}); fix or remove it") from None


def _read_all(paths: list[str], image_size: int, grayscale: bool) -> torch.Tensor:
    """All images as one uint8 (N, C, H, W) tensor, filled in place (no list of copies)."""
    mode, channels = ("L", 1) if grayscale else ("RGB", 3)
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(paths):
        img = _read_image(path, image_size, mode)
        out[i] = img[None] if grayscale else img.transpose(2, 0, 1)
    return torch.from_numpy(out)


@declare("image")
def load_image_folder(
    root: str,
    image_size: int = 32,
    grayscale: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction} "
            f"leaves no training images; keep the sum below 1"
        )
    if image_size < 1:
        raise DataError(f"dataset.image_size={image_size} must be a positive number of pixels")

    root = resolve_root(root)
    classes = _class_dirs(root)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images_in(os.path.join(root, name))
        paths += found
        labels += [label] * len(found)

    x = _read_all(paths, image_size, grayscale)
    y = torch.tensor(labels, dtype=torch.long)
    test_idx, val_idx, train_idx = stratified_split(y, (test_fraction, val_fraction), seed)
    return assemble_splits(
        "image_folder",
        train=(x[train_idx], y[train_idx]),
        val=(x[val_idx], y[val_idx]),
        test=(x[test_idx], y[test_idx]),
        class_names=classes,
        subset=subset,
        seed=seed,
        extra={"root": root},
    )
