"""Your own images: root/<class name>/<image files>, resized and split train/val/test.

Every image is resized to image_size x image_size (aspect ratio is not kept: the models
expect square inputs). In memory (the default while the decoded images fit
`memory_budget_mb`): each image is decoded once, the training split kept as uint8, val and
test as float (vision.assemble_splits). Streamed (`in_memory=false`, or automatically above
the budget): nothing is decoded up front; each split is a `FolderImages`, whose batches
DataLoader workers decode as the loaders ask for them (the same reader, so the same pixels),
and the batched augmentation then runs on the device as for data in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch

from ..registry import DATASETS
from .splits import DataError, DataInfo, DataSplits, channel_stats, stratified_split, take_subset
from .vision import assemble_splits, check_fraction, one_line, resolve_root

log = logging.getLogger("pdl_experiments")

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


@DATASETS.register("image_folder", kind="image")
def load_image_folder(
    root: str,
    image_size: int = 32,
    grayscale: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    subset: int | None = None,
    seed: int = 0,
    in_memory: bool | None = None,
    memory_budget_mb: float = 2048.0,
    workers: int = 2,
) -> DataSplits:
    """in_memory: true decodes every image up front, false streams them; null (default):
    in memory unless that would take more than memory_budget_mb (uint8 train, float32 val
    and test). workers: DataLoader processes decoding a streamed split (0: this process)."""
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

    y = torch.tensor(labels, dtype=torch.long)
    test_idx, val_idx, train_idx = stratified_split(y, (test_fraction, val_fraction), seed)
    channels = 1 if grayscale else 3
    pixels = len(paths) * channels * image_size**2
    need_mb = pixels * (len(train_idx) + 4 * (len(val_idx) + len(test_idx))) / len(paths) / 2**20
    if in_memory is None and need_mb > memory_budget_mb:
        log.info(
            "image folder: %d images would take %.0f MB in memory (dataset.memory_budget_mb=%g): "
            "streaming them (dataset.in_memory=true keeps them in memory)",
            len(paths),
            need_mb,
            memory_budget_mb,
        )
        in_memory = False
    if in_memory is False:
        if workers < 0:
            raise DataError(f"dataset.workers={workers} must be >= 0 (0: decode in this process)")
        images = FolderImages(paths, image_size, grayscale, workers)
        return _streamed_splits(images, y, (train_idx, val_idx, test_idx), classes, subset, seed, root)

    x = _read_all(paths, image_size, grayscale)
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


# --------------------------------------------------------------------------------------
# Streamed: decoded per batch, in DataLoader workers
# --------------------------------------------------------------------------------------

STATS_SAMPLE = 2048  # images of the training split decoded for the channel mean / std


def _streamed_splits(
    images: FolderImages,
    y: torch.Tensor,
    parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    classes: list[str],
    subset: int | None,
    seed: int,
    root: str,
) -> DataSplits:
    train_idx, val_idx, test_idx = parts
    # Stand-ins for uint8 tensors (what the project uses of them: see FolderImages).
    x_train, y_train = take_subset(cast(torch.Tensor, images[train_idx]), y[train_idx], subset, seed)
    step = max(1, len(y_train) // STATS_SAMPLE)
    mean, std = channel_stats(cast(FolderImages, x_train[::step][:STATS_SAMPLE]).load())
    info = DataInfo(
        name="image_folder",
        in_shape=tuple(x_train.shape[1:]),
        num_classes=len(classes),
        mean=mean,
        std=std,
        class_names=list(classes),
        extra={"root": root, "streamed": True},
    )
    val = (cast(torch.Tensor, images[val_idx]), y[val_idx])
    test = (cast(torch.Tensor, images[test_idx]), y[test_idx])
    return DataSplits((x_train, y_train), val, test, info)


class FolderImages:
    """Images of an image folder, decoded when a batch is asked for: uint8 (N, C, S, S).

    It stands in for a uint8 tensor where the project uses one: `len`, `shape`, `dtype`,
    `device`, `.to(device)`, indexing with a slice or an index tensor (another FolderImages:
    nothing is decoded) and with an int (one decoded image), `.load()` (every image, decoded:
    `data.as_float` calls it). TensorLoader asks it for whole epochs of batches (`batches`):
    `workers` DataLoader processes decode them ahead, in order, so memory holds only a few
    batches at a time whatever the folder's size.
    """

    dtype = torch.uint8

    def __init__(
        self,
        paths: Sequence[str],
        image_size: int,
        grayscale: bool,
        workers: int = 2,
        device: torch.device | str = "cpu",
    ):
        self.paths = list(paths)
        self.image_size, self.grayscale, self.workers = image_size, grayscale, workers
        self.device = torch.device(device)

    @property
    def shape(self) -> torch.Size:
        s = self.image_size
        return torch.Size((len(self.paths), 1 if self.grayscale else 3, s, s))

    def __len__(self) -> int:
        return len(self.paths)

    def dim(self) -> int:
        return 4

    def _like(self, paths: Sequence[str]) -> FolderImages:
        return FolderImages(paths, self.image_size, self.grayscale, self.workers, self.device)

    def to(self, device: torch.device | str, *args: Any, **kwargs: Any) -> FolderImages:
        return FolderImages(self.paths, self.image_size, self.grayscale, self.workers, device)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):
            return self._like([self.paths[index]]).load()[0]
        return self._like([self.paths[i] for i in _positions(index, len(self.paths))])

    def load(self) -> torch.Tensor:
        """Every image, decoded here: uint8 (N, C, S, S) on the device."""
        return _decode(self.paths, self.image_size, self.grayscale).to(self.device)

    def batches(self, rows: Sequence[Any]) -> Iterator[torch.Tensor]:
        """The decoded batches of `rows` (slices or index tensors), in order, on the device."""
        plan = [[self.paths[i] for i in _positions(r, len(self.paths))] for r in rows]
        if self.workers == 0 or len(plan) < 2:
            for paths in plan:
                yield _decode(paths, self.image_size, self.grayscale).to(self.device)
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _Decoded(plan, self.image_size, self.grayscale),
            batch_size=None,  # each item is a whole batch
            num_workers=min(self.workers, len(plan)),
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2,
        )
        for xb in loader:
            yield xb.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} images, {tuple(self.shape[1:])}, streamed)"


class _Decoded(torch.utils.data.Dataset):
    """Item k: batch k of the plan, decoded (uint8 (B, C, S, S)); run in the workers."""

    def __init__(self, plan: list[list[str]], image_size: int, grayscale: bool):
        self.plan, self.image_size, self.grayscale = plan, image_size, grayscale

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> torch.Tensor:
        return _decode(self.plan[k], self.image_size, self.grayscale)


def _decode(paths: Sequence[str], image_size: int, grayscale: bool) -> torch.Tensor:
    return _read_all(list(paths), image_size, grayscale)


def _positions(index: Any, n: int) -> list[int]:
    """A slice, an index tensor or a list of ints -> the positions it selects."""
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return [int(i) % n if n else int(i) for i in index.tolist()]
    return [int(i) for i in index]
