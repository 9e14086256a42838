"""data/augment.py: the batched augmentation, the uint8 data path, and exact resume with them.

Properties of data/augment.py: each image of a batch draws its own parameters, within the
configured ranges; an operation that is off is the identity; values stay in [0, 1]; 1- and
3-channel data; the same pixels as torchvision's transforms for the same parameters; built from
the `augmentation` config group. Then the loaders: uint8 in memory, float batches out,
augmented batches replayed on a resume; a run interrupted mid-epoch with augmentation on
resumes to the same metrics.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pdl_experiments.data import TensorLoader
from pdl_experiments.data.augment import (
    AugmentationError,
    AugmentParams,
    BatchAugment,
    apply_params,
    batch_generator,
    build_augmentation,
    build_per_image_augmentation,
    draw_params,
)

from helpers import interrupt_and_resume, without_timings, write_folder

OFF = dict(crop_scale=1.0, mirror=0.0, rotation=0.0, brightness=0.0, saturation=0.0)
ALL = dict(crop_scale=0.6, mirror=0.5, rotation=20.0, brightness=0.3, saturation=0.4)


def ops(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{**OFF, **kw})


def smooth_images(n: int, c: int = 3, size: int = 32) -> torch.Tensor:
    """Images (n, c, size, size) in [0, 1] that bilinear resampling leaves almost unchanged."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2, 1 - xx][:c])  # (c, size, size)
    return base.expand(n, c, size, size).clone()


# ------------------------------------------------------------------ drawn parameters
def test_drawn_parameters_stay_in_their_ranges_and_flip_at_rate_p():
    n = 20000
    p = draw_params(ops(**ALL), n, (3, 32, 32), torch.Generator().manual_seed(0))
    area = p.crop_area
    assert area.min() >= 0.6 - 1e-6 and area.max() <= 1 + 1e-6
    assert area.std() > 0.05  # spread over the range, not stuck at one end
    ratio = p.crop_size[:, 0] / p.crop_size[:, 1]  # width / height in pixels (square images)
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (p.crop_center.abs() <= 1 - p.crop_size + 1e-6).all()  # the crop lies inside the image
    assert p.angle.abs().max() <= 20 and p.angle.min() < -19 and p.angle.max() > 19
    assert p.brightness.min() >= 0.7 and p.brightness.max() <= 1.3
    assert p.saturation.min() >= 0.6 and p.saturation.max() <= 1.4
    rate = p.flip.float().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / n)
    assert abs(draw_params(ops(mirror=0.2), n, (3, 32, 32)).flip.float().mean().item() - 0.2) < 0.02


def test_operations_that_are_off_draw_neutral_parameters():
    p = draw_params(ops(), 64, (3, 32, 32), torch.Generator().manual_seed(1))
    assert torch.equal(p.crop_size, torch.ones(64, 2)) and torch.equal(p.crop_center, torch.zeros(64, 2))
    assert not p.flip.any() and torch.equal(p.angle, torch.zeros(64))
    assert torch.equal(p.brightness, torch.ones(64)) and torch.equal(p.saturation, torch.ones(64))


def test_batch_generators_are_pure_functions_of_key_batch_and_rank():
    def drawn(*args):
        return draw_params(ops(**ALL), 8, (3, 32, 32), batch_generator(*args)).angle

    assert torch.equal(drawn(7, 3), drawn(7, 3, 0))
    for other in ((8, 3), (7, 4), (7, 3, 1)):
        assert not torch.equal(drawn(7, 3), drawn(*other))


# ------------------------------------------------------------------ the images
def test_identical_images_come_out_different():
    x = torch.rand(1, 3, 32, 32).expand(16, 3, 32, 32).contiguous()
    y = build_augmentation(ops(**ALL), (3, 32, 32))(x, torch.Generator().manual_seed(0))
    flat = y.flatten(1)
    assert (torch.cdist(flat, flat) + torch.eye(16) * 1e9).min() > 1e-3  # every pair differs


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "op",
    [
        dict(crop_scale=0.5),
        dict(mirror=1.0),
        dict(rotation=30.0),
        dict(brightness=0.5),
        dict(saturation=0.9),
        ALL,
        {**ALL, "brightness": 0.99, "saturation": 3.0},
    ],
    ids=["crop", "mirror", "rotation", "brightness", "saturation", "all", "extreme colour"],
)
def test_values_stay_in_unit_range_with_one_and_three_channels(op, channels):
    if channels == 1 and op.get("saturation"):
        with pytest.raises(AugmentationError, match="1-channel"):
            build_augmentation(ops(**op), (channels, 16, 16))
        return
    x = torch.rand(32, channels, 16, 16)
    y = build_augmentation(ops(**op), (channels, 16, 16))(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)


def test_an_operation_that_is_off_is_the_identity():
    x = torch.rand(8, 3, 16, 16)
    neutral = draw_params(ops(), 8, (3, 16, 16))
    for name, value in ALL.items():  # each one on, with the draw of an image that leaves it off
        assert torch.allclose(apply_params(x, neutral, ops(**{name: value})), x, atol=1e-5), name
    assert build_augmentation(ops(), (3, 16, 16)) is None  # all off: no augmentation at all
    # only the colour on: the geometry is untouched (a per-image factor of the input)
    y = BatchAugment(ops(brightness=0.3), (3, 16, 16))(x, torch.Generator().manual_seed(0))
    p = draw_params(ops(brightness=0.3), 8, (3, 16, 16), torch.Generator().manual_seed(0))
    assert torch.allclose(y, (x * p.brightness.view(8, 1, 1, 1)).clamp(0, 1))


def test_mirror_alone_is_an_exact_flip_of_the_drawn_images():
    x = torch.rand(64, 3, 8, 8)
    p = draw_params(ops(mirror=0.5), 64, (3, 8, 8), torch.Generator().manual_seed(3))
    y = apply_params(x, p, ops(mirror=0.5))
    assert torch.equal(y[p.flip], x[p.flip].flip(-1)) and torch.equal(y[~p.flip], x[~p.flip])
    assert 0 < p.flip.sum() < 64


def _one(p: AugmentParams, **values) -> AugmentParams:
    fields = {k: getattr(p, k)[:1].clone() for k in AugmentParams.__dataclass_fields__}
    fields.update(
        {k: torch.as_tensor(v).reshape(fields[k].shape).to(fields[k].dtype) for k, v in values.items()}
    )
    return AugmentParams(**fields)


def test_the_same_pixels_as_torchvision_for_the_same_parameters():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = smooth_images(1)
    base = draw_params(ops(), 1, (3, 32, 32))
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # edges: resampling details
    # crop: a 16x20 crop at top 8, left 4, resized back to 32x32
    p = _one(base, crop_size=[20 / 32, 16 / 32], crop_center=[(4 + 10) / 16 - 1, (8 + 8) / 16 - 1])
    ref = TF.resized_crop(x, 8, 4, 16, 20, [32, 32], antialias=True)
    assert (apply_params(x, p, ops(crop_scale=0.3))[inner] - ref[inner]).abs().max() < 2e-3
    # rotation: counter-clockwise, about the centre, corners filled with 0
    p = _one(base, angle=25.0)
    ref = TF.rotate(x, 25.0, interpolation=InterpolationMode.BILINEAR)
    ours = apply_params(x, p, ops(rotation=30.0))
    assert (ours - ref)[..., 8:24, 8:24].abs().max() < 1e-4  # inside: the same pixels
    assert (ours - ref).abs().mean() < 0.01  # the edge of the blank corners: a pixel's blend
    assert ours[..., 0, 0].max() == 0  # a corner rotated in from outside
    # brightness and saturation: ColorJitter's formulas
    p = _one(base, brightness=1.4)
    assert torch.allclose(apply_params(x, p, ops(brightness=0.5)), TF.adjust_brightness(x, 1.4), atol=1e-6)
    p = _one(base, saturation=0.3)
    assert torch.allclose(apply_params(x, p, ops(saturation=0.5)), TF.adjust_saturation(x, 0.3), atol=1e-5)


def test_the_per_image_reference_stays_available():
    ref = build_per_image_augmentation(ops(**ALL), (3, 16, 16))
    y = ref(torch.rand(4, 3, 16, 16))
    assert y.shape == (4, 3, 16, 16) and 0 <= y.min() and y.max() <= 1


# ------------------------------------------------------------------ from the config
def _aug(**kw):
    from pdl_experiments.config.schema import AugmentationConfig
    from pdl_experiments.data.augment import build_augmentation

    cfg = AugmentationConfig(**kw)
    return build_augmentation(cfg, (3, 16, 16))


@pytest.mark.parametrize(
    "op",
    [dict(crop_scale=0.5), dict(mirror=1.0), dict(rotation=30), dict(brightness=0.5), dict(saturation=0.9)],
)
def test_each_augmentation_changes_images_and_keeps_range(op):
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    aug = _aug(**op)
    y = aug(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)


def test_no_augmentation_is_none_and_saturation_on_grayscale_is_an_error():
    from pdl_experiments.config.schema import AugmentationConfig
    from pdl_experiments.data.augment import AugmentationError, build_augmentation

    assert build_augmentation(AugmentationConfig(), (1, 8, 8)) is None
    with pytest.raises(AugmentationError, match="1-channel"):
        build_augmentation(AugmentationConfig(saturation=0.5), (1, 8, 8))


def test_mirror_flips_per_image():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(4, 3, 1, 1) / 16
    y = _aug(mirror=1.0)(x)
    assert torch.equal(y, x.flip(-1))


# ------------------------------------------------------------------ the loaders
def test_uint8_in_memory_float_batches_out_and_augmented_batches_replay_on_resume():
    from pdl_experiments.data.synthetic import load_synthetic

    data = load_synthetic("cifar10", n_train=100, n_val=10, n_test=10)
    x, y = data.train
    assert x.dtype == torch.uint8 and x.element_size() == 1 and data.val[0].dtype == torch.float32
    aug = build_augmentation(ops(**ALL), (3, 32, 32))
    gen = torch.Generator().manual_seed(5)
    loader = TensorLoader(x, y, 16, shuffle=True, generator=gen, transform=aug)
    start = gen.get_state()
    epoch = list(loader)
    assert all(xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1 for xb, _ in epoch)
    gen.set_state(start)  # what the trainer does on a resume: the epoch's start, then skip
    again = list(loader.iter_from(3))
    assert len(again) == len(epoch) - 3
    for (xa, ya), (xb, yb) in zip(epoch[3:], again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(epoch[0][0], next(iter(loader))[0])  # the next epoch: new draws


# ------------------------------------------------------------------ a run, interrupted and resumed
@pytest.mark.parametrize(
    "data",
    [
        ["dataset.subset=300", "augmentation=light"],
        ["dataset=image_folder", "dataset.image_size=16", "dataset.in_memory=false", "dataset.workers=1",
         "augmentation=color"],
    ],
    ids=["digits-light", "streamed-folder-color"],
)  # fmt: skip
def test_a_run_interrupted_mid_epoch_with_augmentation_resumes_to_the_same_metrics(
    tmp_path, monkeypatch, data
):
    if "dataset=image_folder" in data:
        data = [*data, f"dataset.root={write_folder(tmp_path / 'imgs')}"]
    overrides = [
        *data,
        "trainer.max_epochs=2",
        "trainer.batch_size=16",
        "trainer.num_threads=1",
        "bn.diagnostics=false",
        "augmentation.grid=false",
    ]
    counter = {"n": 0, "first_epoch": None}

    def second_step_of_epoch_2(trainer) -> bool:
        counter["n"] += 1
        if trainer.epoch == 2 and counter["first_epoch"] is None:
            counter["first_epoch"] = counter["n"]
        return counter["first_epoch"] is not None and counter["n"] == counter["first_epoch"] + 1

    clean, last, resumed = interrupt_and_resume(tmp_path, monkeypatch, overrides, second_step_of_epoch_2)
    assert last["loop"]["epoch"] == 1 and last["loop"]["batch"] == 2 and not last["phase_complete"]
    assert without_timings(resumed) == pytest.approx(without_timings(clean), rel=1e-6, abs=1e-9)


def test_augmentation_study_preset_is_a_learning_curve_on_mnist5k():
    from helpers import compose

    cfg = compose(["experiment=augmentation_study"])
    assert cfg.dataset._target_.endswith("load_mnist5k") and cfg.trainer.monitor == "none"
    assert cfg.scheduler._target_.endswith("CosineAnnealingLR")
    light = compose(["experiment=augmentation_study", "augmentation=light"]).augmentation
    assert light.mirror == 0 and light.saturation == 0  # a mirrored digit is another symbol
