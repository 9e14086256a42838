"""data/image_folder.py: a folder of class folders of images, in memory or streamed from disk.

Nothing here downloads: every test writes its own few images into tmp_path.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from pdl_experiments.data import DataError, TensorLoader, as_float
from pdl_experiments.data.image_folder import load_image_folder

from helpers import assert_same, check_splits, write_folder


def write_image_folder(root, classes=("cat", "dog", "fish"), per_class: int = 6) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]  # the loader must normalise whatever it finds
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            img = Image.fromarray(rng.integers(0, 256, size=(10 + i, 12, 3), dtype=np.uint8)).convert(
                mode
            )  # not square
            img.save(os.path.join(root, c, f"{i}.png"))
    # things that are not images must be ignored
    with open(os.path.join(root, classes[0], "notes.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, ".hidden"), exist_ok=True)
    return str(root)


@pytest.mark.parametrize("grayscale,channels", [(False, 3), (True, 1)])
def test_image_folder(tmp_path, grayscale, channels):
    root = write_image_folder(tmp_path / "imgs")
    s = load_image_folder(root, image_size=8, grayscale=grayscale, seed=0)
    check_splits(s, (channels, 8, 8), 12 + 3, 3)
    assert s.sizes() == {"train": 12, "val": 3, "test": 3}  # 6 per class: 4 / 1 / 1
    assert s.info.class_names == ["cat", "dog", "fish"]
    assert set(s.test[1].tolist()) == {0, 1, 2}
    assert_same(s, load_image_folder(root, image_size=8, grayscale=grayscale, seed=0))


@pytest.mark.parametrize("case", ["missing", "empty", "one class"])
def test_image_folder_bad_root(tmp_path, case):
    root = tmp_path / "imgs"
    if case != "missing":
        root.mkdir()
    if case == "one class":
        write_image_folder(root, classes=("only",))
    with pytest.raises(DataError, match=re.escape(str(root))) as e:
        load_image_folder(str(root))
    assert "\n" not in str(e.value)


def test_image_folder_unreadable_image_names_the_file(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    bad = os.path.join(root, "dog", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(root)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_streamed_image_folder_gives_the_in_memory_batches(tmp_path, workers):
    from pdl_experiments.data.image_folder import FolderImages, load_image_folder

    root = write_folder(tmp_path / "imgs")
    mem = load_image_folder(root, image_size=16, seed=0)
    streamed = load_image_folder(root, image_size=16, seed=0, in_memory=False, workers=workers)
    auto = load_image_folder(root, image_size=16, seed=0, memory_budget_mb=0.01)  # over budget: streamed
    assert isinstance(streamed.train[0], FolderImages) and isinstance(auto.train[0], FolderImages)
    assert torch.equal(streamed.train[0].load(), mem.train[0])
    assert torch.equal(as_float(streamed.test[0]), mem.test[0])
    assert streamed.info.in_shape == mem.info.in_shape == (3, 16, 16)
    batches = []
    for data in (mem, streamed):
        loader = TensorLoader(*data.train, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
        batches.append(list(loader.iter_from(1)))
    for (xa, ya), (xb, yb) in zip(*batches, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
