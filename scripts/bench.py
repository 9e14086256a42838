#!/usr/bin/env python
"""Side-by-side performance figures of pdl-experiments: a table on screen, JSON on disk.

    python scripts/bench.py                 # everything, a few minutes on a 2-core CPU
    python scripts/bench.py --only overhead startup
    python scripts/bench.py --full-techniques   # each technique's full default run (long)

1. runner overhead: the project's trainer vs a minimal hand-written loop, same work
2. start-up: `pdl-run --cfg job` vs `python -c pass` and `python -c "import torch"`
3. the default run: time to its first training step and total wall time
4. data path: TensorLoader vs slicing raw tensors vs DataLoader(TensorDataset)
5. pruning: dense vs filter-pruned CNN latency at batch 1 and 256
6. each technique: wall time and peak resident memory (RSS) of a run
7. CUDA (when available): the overhead ratio with bf16 autocast, samples/s
8. ddp: samples/s of trainer.devices=2 vs 1 on a CIFAR-shaped ResNet, one thread per
   process on the CPU (and on two GPUs when there are), and the scaling efficiency
9. cifar (cifar_cuda on CUDA): CIFAR-shaped data, 50k images uint8 in memory: batched vs
   per-image augmentation, the trainer vs a bare loop, epochs with and without augmentation,
   epoch time at 1k/4k/16k/50k images
10. stream: a folder of 3,000 64x64 PNGs trained in memory vs streamed: peak RSS
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# The console script users type, from this interpreter's environment (`python -m` costs
# ~40 ms more: runpy imports the package, then re-executes cli as __main__).
_SCRIPT = Path(PY).with_name("pdl-run")
PDL = [str(_SCRIPT)] if _SCRIPT.is_file() else [PY, "-m", "pdl_experiments.cli"]
RESULTS: dict[str, dict] = {}


def record(section: str, name: str, value: float, unit: str, target: str = "") -> None:
    RESULTS.setdefault(section, {})[name] = {"value": value, "unit": unit, "target": target}


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1:]}")
    return wall, 0


def child_peak_rss(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """Run cmd in a fresh wrapper so ru_maxrss is this child's own peak."""
    code = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': p.returncode, 'wall': wall, 'rss': rss, 'err': p.stderr[-400:]}))"
    )
    out = subprocess.run([PY, "-c", code, *cmd], cwd=cwd, capture_output=True, text=True, env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["wall"], res["rss"], "" if res["rc"] == 0 else res["err"]


def compose(overrides: list[str]):
    """The typed config `pdl-run <overrides>` would run, without Hydra's runtime section."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from pdl_experiments.config import typed

    with initialize_config_module(config_module="pdl_experiments.configs", version_base="1.3"):
        return typed(hydra_compose(config_name="config", overrides=list(overrides)))


# ---------------------------------------------------------------------------------------
def bench_overhead(device: str = "cpu", epochs: int = 20, repeats: int = 7) -> None:
    """Same model, data, batch size, seed, threads; both evaluate val once per epoch."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from pdl_experiments.data import TensorLoader
    from pdl_experiments.run.context import RunContext
    from pdl_experiments.training.logger import RunLogger
    from pdl_experiments.training.task import ClassificationTask, classification_metrics

    overrides = [
        f"trainer.max_epochs={epochs}",
        "trainer.progress=none",
        f"trainer.device={device}",
        "bn.diagnostics=false",
    ]
    cfg = compose(overrides)
    dev = torch.device(device)
    data = instantiate(cfg.dataset, _convert_="all").to(dev)
    bs = int(cfg.trainer.batch_size)

    def minimal() -> float:
        torch.manual_seed(0)
        ctx = RunContext(cfg, Path(tempfile.mkdtemp()), data, dev, None)
        model = ctx.build_model()
        opt = instantiate(cfg.optimizer)(model.parameters())
        x, y = data.train
        g = torch.Generator().manual_seed(1)
        val = TensorLoader(*data.val, 1024)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
        t0 = time.perf_counter()
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(y), generator=g).to(dev)
            for i in range(0, len(y), bs):
                idx = perm[i : i + bs]
                if amp is not None:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = F.cross_entropy(model(x[idx]), y[idx])
                else:
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                classification_metrics(model, val)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def trainer() -> float:
        torch.manual_seed(0)
        run_dir = Path(tempfile.mkdtemp())
        logger = RunLogger(run_dir)
        ctx = RunContext(cfg, run_dir, data, dev, logger)
        task = ClassificationTask(ctx.build_model())
        t0 = time.perf_counter()
        ctx.fit(task)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        logger.close()
        return wall

    minimal(), trainer()  # warm-up: allocator, kernels, lazy imports
    mins, trains = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        mins.append(minimal())
        trains.append(trainer())
    # Medians of the interleaved repeats: on this 2-core box single repeats vary by a few
    # per cent, and the fastest ones vary more than the medians do.
    m, t = statistics.median(mins), statistics.median(trains)
    sec = f"1. runner overhead ({device}, {epochs} epochs)"
    record(sec, "minimal loop", m, "s")
    record(sec, "pdl trainer (incl. checkpoints, TensorBoard)", t, "s")
    record(sec, "ratio trainer / minimal", t / m, "x", "<= 1.05")
    n = len(data.train[1]) * epochs
    record(sec, "trainer samples/s", n / t, "samples/s")


def bench_startup(tmp: Path, repeats: int = 5) -> None:
    sec = "2. start-up"

    def med(cmd):
        walls = []
        for _ in range(repeats):
            walls.append(timed(cmd, tmp)[0])
        return statistics.median(walls)

    record(sec, "python -c pass", med([PY, "-c", "pass"]), "s")
    record(sec, "python -c 'import torch'", med([PY, "-c", "import torch"]), "s")
    record(sec, "pdl-run --cfg job", med(PDL + ["--cfg", "job"]), "s", "<= 0.6")


def bench_default_run(tmp: Path) -> None:
    sec = "3. default run (pdl-run, all defaults)"
    env = {**os.environ, "PDL_T0": str(time.time())}
    wall, rss, err = child_peak_rss(PDL + ["hydra.run.dir=" + str(tmp / "default")], tmp, env)
    if err:
        raise RuntimeError(err)
    m = json.loads((tmp / "default" / "metrics.json").read_text())
    record(sec, "time to first training step", m.get("run/time_to_first_step_s", float("nan")), "s")
    record(sec, "total wall time", wall, "s", "<= 30")
    record(sec, "test/acc", m["test/acc"], "", ">= 0.97")
    record(sec, "peak RSS", rss, "MiB")


def bench_data(batch_size: int = 64, epochs: int = 50) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from pdl_experiments.data import TensorLoader
    from pdl_experiments.data.digits import load_digits

    x, y = load_digits().train
    n = len(y) * epochs
    sec = f"4. data path (digits train split, batch {batch_size}, shuffled)"

    def run(make_iter):
        t0 = time.perf_counter()
        for _ in range(epochs):
            for _xb, _yb in make_iter():
                pass
        return n / (time.perf_counter() - t0)

    g = torch.Generator().manual_seed(0)
    loader = TensorLoader(x, y, batch_size, shuffle=True, generator=g)

    def raw():
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]

    dl = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    record(sec, "TensorLoader", run(lambda: iter(loader)), "samples/s")
    record(sec, "raw tensor slicing", run(raw), "samples/s")
    record(sec, "DataLoader(TensorDataset)", run(lambda: iter(dl)), "samples/s")


def bench_pruning(repeats: int = 30) -> None:
    import torch
    import torch_pruning as tp

    from pdl_experiments.data.digits import load_digits
    from pdl_experiments.models import BatchNormSpec
    from pdl_experiments.models.cnn import SmallCNN

    info = load_digits().info
    torch.manual_seed(0)
    dense = SmallCNN(info, BatchNormSpec()).eval()
    pruned = SmallCNN(info, BatchNormSpec()).eval()
    example = torch.rand(2, *info.in_shape)
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[pruned.classifier[-1]],
    )
    pruner.step()
    sec = "5. pruning latency (SmallCNN on 8x8 digits, filter ratio 0.5, L1)"
    for bs in (1, 256):
        x = torch.rand(bs, *info.in_shape)
        for name, model in (("dense", dense), ("pruned", pruned)):
            with torch.no_grad():
                for _ in range(5):
                    model(x)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
            record(sec, f"{name} batch {bs}", 1000 * statistics.median(times), "ms")
        d, p = RESULTS[sec][f"dense batch {bs}"]["value"], RESULTS[sec][f"pruned batch {bs}"]["value"]
        record(sec, f"pruned / dense batch {bs}", p / d, "x")


def bench_techniques(tmp: Path, full: bool) -> None:
    from pdl_experiments.techniques import QUICK, TECHNIQUES

    sec = "6. techniques (" + ("full default runs" if full else "short runs: see overrides") + ")"
    for name in TECHNIQUES:
        extra = [] if full else QUICK[name]
        run_dir = tmp / f"tech_{name}"
        wall, rss, err = child_peak_rss(PDL + [f"technique={name}", *extra, f"hydra.run.dir={run_dir}"], tmp)
        label = f"{name} {' '.join(extra)}".strip()
        if err:
            record(sec, f"{label}: FAILED", float("nan"), err.strip().splitlines()[-1][:80])
            continue
        record(sec, f"{label}: wall", wall, "s")
        record(sec, f"{label}: peak RSS", rss, "MiB")


DDP_RUN = [
    "model=resnet",  # CIFAR-style: 3 stages of basic blocks, width 16
    "dataset=synthetic",
    "dataset.shape=cifar10",  # 3x32x32
    "dataset.n_train=4096",
    "dataset.n_val=256",
    "dataset.n_test=256",
    "trainer.max_epochs=3",
    "trainer.batch_size=128",  # the global batch: 64 per process at trainer.devices=2
    "trainer.progress=none",
    "bn.diagnostics=false",
    "augmentation.grid=false",
    "logger=csv",
]


def _ddp_samples_per_s(tmp: Path, name: str, overrides: list[str]) -> float:
    """Median train/samples_per_s (all processes together) of the epochs after the first."""
    import csv

    run_dir = tmp / name
    p = subprocess.run(
        PDL + [*DDP_RUN, *overrides, f"hydra.run.dir={run_dir}"], cwd=tmp, capture_output=True, text=True
    )
    if p.returncode != 0:
        raise RuntimeError(f"{name} failed: {p.stderr.strip().splitlines()[-1:]}")
    with (run_dir / "metrics.csv").open() as f:
        rates = [float(r["train/samples_per_s"]) for r in csv.DictReader(f) if r.get("train/samples_per_s")]
    return statistics.median(rates[1:] or rates)


def bench_ddp(tmp: Path) -> None:
    """trainer.devices=2 vs 1, the same global batch; efficiency = 2-proc / (2 x 1-proc)."""
    import torch

    sec = "8. ddp (trainer.devices, CIFAR-shaped ResNet)"
    load = os.getloadavg()[0]
    cpu = ["trainer.num_threads=1", "trainer.device=cpu"]
    one = _ddp_samples_per_s(tmp, "ddp1", ["trainer.devices=1", *cpu])
    two = _ddp_samples_per_s(tmp, "ddp2", ["trainer.devices=2", *cpu])
    record(sec, "CPU, 1 process, 1 thread: samples/s", one, "samples/s")
    record(sec, "CPU, 2 processes (gloo), 1 thread each: samples/s", two, "samples/s")
    record(sec, "CPU scaling efficiency (2-proc / 2 x 1-proc)", two / (2 * one), "", ">= 0.7")
    record(sec, "load average before / after", load, f"/ {os.getloadavg()[0]:.2f} (1 min)", "both cores free")
    if torch.cuda.device_count() >= 2:
        one = _ddp_samples_per_s(tmp, "ddp1_cuda", ["trainer.devices=1", "trainer.device=cuda"])
        two = _ddp_samples_per_s(tmp, "ddp2_cuda", ["trainer.devices=2", "trainer.device=cuda"])
        record(sec, "CUDA, 1 GPU: samples/s", one, "samples/s")
        record(sec, "CUDA, 2 GPUs (NCCL): samples/s", two, "samples/s")
        record(sec, "CUDA scaling efficiency", two / (2 * one), "")
    else:
        record(sec, "CUDA", float("nan"), f"skipped: {torch.cuda.device_count()} GPU(s), 2 needed")


# -- 9. CIFAR shape, 10. image folder streamed (issue #18) --------------------------------------
# The zoo's ResNet on the CPU shrunk to width 8 and one block per stage, so the section stays
# within ~4 minutes on 2 cores; on CUDA its defaults (width 16, two blocks per stage).
CIFAR_MODEL = {"cpu": ["model.width=8", "model.blocks_per_stage=[1,1,1]"], "cuda": []}
CIFAR_SIZES = (1000, 4000, 16000, 50000)


def _cifar_cfg(device: str, augmentation: str = "none", extra: tuple[str, ...] = ()):
    return compose(
        [
            "model=resnet",
            *CIFAR_MODEL[device],
            f"augmentation={augmentation}",
            "augmentation.grid=false",
            "trainer.batch_size=256",
            "trainer.max_epochs=1",
            "trainer.progress=none",
            f"trainer.device={device}",
            "bn.diagnostics=false",
            *extra,
        ]
    )


def bench_cifar(device: str = "cpu", repeats: int = 5, rounds: int = 3) -> None:
    """CIFAR-shaped data (synthetic cifar10, 50k training images, uint8 in memory): the batched
    augmentation vs the per-image loop; the trainer vs a bare loop over the same tensors; an
    epoch with augmentation=color vs without; epoch time at 1k / 4k / 16k / 50k images."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from pdl_experiments.data import DataSplits, TensorLoader, as_float
    from pdl_experiments.data.augment import build_augmentation, build_per_image_augmentation
    from pdl_experiments.data.synthetic import load_synthetic
    from pdl_experiments.run.context import RunContext
    from pdl_experiments.training.logger import RunLogger
    from pdl_experiments.training.task import ClassificationTask, classification_metrics

    model = "ResNet width 8, 1 block/stage" if device == "cpu" else "ResNet width 16, 2 blocks/stage"
    sec = f"9. CIFAR shape ({device}; synthetic cifar10, {model}, batch 256)"
    if device == "cuda" and not torch.cuda.is_available():
        record(sec, "skipped", float("nan"), "no CUDA device on this machine")
        return
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    load = os.getloadavg()[0]
    full = load_synthetic("cifar10", n_train=max(CIFAR_SIZES), n_val=1000, n_test=1000)
    x_all = full.train[0]
    record(sec, "training split in memory, 50k images (uint8)", x_all.nbytes / 2**20, "MiB", "~150")
    record(sec, "the same as float32 (before)", x_all.numel() * 4 / 2**20, "MiB")
    full = full.to(dev)

    # 1. augmentation=color (all five operations) at batch 256: images/s
    aug_cfg = _cifar_cfg(device, "color").augmentation
    new = build_augmentation(aug_cfg, (3, 32, 32))
    old = build_per_image_augmentation(aug_cfg, (3, 32, 32))
    assert new is not None and old is not None
    xb = as_float(full.train[0][:256])

    def rate(fn, n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            fn(xb, torch.Generator().manual_seed(i))
        sync()
        return 256 * n / (time.perf_counter() - t0)

    rate(new, 2), rate(old, 1)  # warm-up
    batched, per_image = [], []
    for _ in range(repeats):  # interleaved
        batched.append(rate(new, 10))
        per_image.append(rate(old, 1))
    b, p = statistics.median(batched), statistics.median(per_image)
    record(sec, "augmentation: per-image torchvision loop (before)", p, "images/s")
    record(sec, "augmentation: batched (affine grid + per-image factors)", b, "images/s")
    record(sec, "augmentation: batched / per-image", b / p, "x", ">= 20")

    # 2. one epoch of n images: the trainer (with / without augmentation) vs a bare loop
    def subset(n: int) -> DataSplits:
        return DataSplits((full.train[0][:n], full.train[1][:n]), full.val, full.test, full.info)

    plain_cfg = _cifar_cfg(device)

    def bare(n: int) -> float:
        data = subset(n)
        torch.manual_seed(0)
        ctx = RunContext(plain_cfg, Path(tempfile.mkdtemp()), data, dev, None)
        net = ctx.build_model()
        opt = instantiate(plain_cfg.optimizer)(net.parameters())
        x, y = data.train
        g = torch.Generator().manual_seed(1)
        val = TensorLoader(*data.val, 1024)
        amp = dev.type == "cuda"
        sync()
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=g).to(dev)
        for i in range(0, n, 256):
            idx = perm[i : i + 256]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(net(x[idx].float().div_(255)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            classification_metrics(net, val)
        sync()
        return time.perf_counter() - t0

    def trainer(n: int, augmentation: str = "none", extra: tuple[str, ...] = ()) -> tuple[float, float]:
        """(wall of the fit: training, validation, checkpoints; its training time alone)"""
        cfg = _cifar_cfg(device, augmentation, extra)
        torch.manual_seed(0)
        run_dir = Path(tempfile.mkdtemp())
        logger = RunLogger(run_dir)
        ctx = RunContext(cfg, run_dir, subset(n), dev, logger)
        task = ClassificationTask(ctx.build_model())
        sync()
        t0 = time.perf_counter()
        result = ctx.fit(task)
        sync()
        wall = time.perf_counter() - t0
        logger.close()
        return wall, result.time_s

    n = 4000
    bare(1024), trainer(1024), trainer(1024, "color")  # warm-up
    bares, walls, plain_s, aug_s = [], [], [], []
    for _ in range(repeats):
        bares.append(bare(n))
        w, t = trainer(n)
        walls.append(w)
        plain_s.append(t)
        aug_s.append(trainer(n, "color")[1])
    m, t = statistics.median(bares), statistics.median(walls)
    record(sec, f"bare loop, {n} images (1 epoch + val)", m, "s")
    record(sec, f"pdl trainer, {n} images (1 epoch + val, checkpoints, TensorBoard)", t, "s")
    record(sec, "trainer / bare loop", t / m, "x", "<= 1.05")
    pa, au = statistics.median(plain_s), statistics.median(aug_s)
    record(sec, f"epoch of {n} images, augmentation=none", pa, "s")
    record(sec, f"epoch of {n} images, augmentation=color", au, "s")
    record(sec, "epoch augmented / un-augmented", au / pa, "x", "<= 1.08")

    # 3. epoch time against the number of images (training time of one epoch)
    times: dict[int, list[float]] = {s: [] for s in CIFAR_SIZES}
    for _ in range(rounds):
        for s in CIFAR_SIZES:
            times[s].append(trainer(s)[1])
    for s in CIFAR_SIZES:
        e = statistics.median(times[s])
        record(sec, f"epoch of {s} images", e, "s")
        record(sec, f"samples/s at {s} images", s / e, "samples/s")
    lin = statistics.median(times[50000]) / (12.5 * statistics.median(times[4000]))
    record(sec, "epoch(50k) / (12.5 x epoch(4k))", lin, "x", "<= 1.1")
    if dev.type == "cuda":
        for label, extra in (("channels_last", ("trainer.channels_last=true",)),):
            e = trainer(16000, extra=extra)[1]
            record(sec, f"samples/s at 16000 images, trainer.{label}=true", 16000 / e, "samples/s")
    record(sec, "load average before / after", load, f"/ {os.getloadavg()[0]:.2f} (1 min)", "2 cores")


def bench_stream(tmp: Path, n_images: int = 3000) -> None:
    """A folder of 64x64 PNGs trained in memory vs streamed (dataset.in_memory=false): peak RSS."""
    from PIL import Image

    from pdl_experiments.data.synthetic import load_synthetic

    sec = f"10. image folder, {n_images} 64x64 PNGs: in memory vs streamed"
    root = tmp / "folder"
    data = load_synthetic("imagenet64", n_train=n_images, n_val=2, n_test=2)
    for i, (img, label) in enumerate(zip(data.train[0], data.train[1].tolist(), strict=True)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / f"class{label}" / f"{i}.png")
    common = [
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=64",
        "model=cnn",
        "trainer.max_epochs=1",
        "trainer.eval_batch_size=128",  # activations at 1024 x 64x64 would dwarf the data
        "trainer.device=cpu",
        "trainer.progress=none",
        "bn.diagnostics=false",
        "augmentation=color",
        "augmentation.grid=false",
        "logger=csv",
    ]
    # glibc's mmap threshold fixed: freed buffers go back to the OS at once, so peak RSS is the
    # peak of live memory (with the dynamic threshold it varied by ~60 MB from run to run).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rss = {}
    for label, value in (("in memory", "true"), ("streamed, 2 workers", "false")):
        run_dir = tmp / f"folder_{value}"
        cmd = PDL + [*common, f"dataset.in_memory={value}", f"hydra.run.dir={run_dir}"]
        wall, rss[value], err = child_peak_rss(cmd, tmp, env)
        if err:
            record(sec, f"{label}: FAILED", float("nan"), err.strip().splitlines()[-1][:80])
            return
        acc = json.loads((run_dir / "metrics.json").read_text())["test/acc"]
        record(sec, f"{label}: wall", wall, "s")
        record(sec, f"{label}: peak RSS", rss[value], "MiB")
        record(sec, f"{label}: test/acc after 1 epoch", acc, "")
    record(sec, "peak RSS streamed / in memory", rss["false"] / rss["true"], "x", "< 1")


def bench_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        record("7. CUDA", "skipped", float("nan"), "no CUDA device on this machine")
        return
    bench_overhead("cuda", epochs=20)


# ---------------------------------------------------------------------------------------
def print_table() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pdl-experiments benchmark", header_style="bold")
    for col in ("section", "measure", "value", "unit", "target"):
        table.add_column(col)
    for sec, rows in RESULTS.items():
        for name, r in rows.items():
            v = r["value"]
            shown = "-" if v != v else (f"{v:.4g}" if isinstance(v, float) else str(v))
            table.add_row(sec, name, shown, r["unit"], r["target"])
    Console(width=160).print(table)


def machine() -> dict:
    import torch

    cpu = "?"
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown_table(wall_s: float) -> str:
    """The results as a Markdown table (what docs/performance.md shows)."""
    m = machine()
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"Python {m['python']}, CUDA: {m['cuda'] or 'none'}. Bench wall time {wall_s:.0f} s.",
        "",
        "| section | measure | value | unit | target |",
        "|---|---|---|---|---|",
    ]
    for sec, rows in RESULTS.items():
        for name, r in rows.items():
            v = r["value"]
            val = f"{v:.4g}" if isinstance(v, float) else str(v)
            lines.append(f"| {sec} | {name} | {val} | {r['unit']} | {r['target']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="overhead startup default data pruning techniques cuda ddp cifar cifar_cuda stream",
    )
    p.add_argument("--full-techniques", action="store_true", help="full default run per technique")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench.json"))
    p.add_argument("--md", default=None, help="also write the table as Markdown to this file")
    args = p.parse_args()
    os.environ.setdefault("PYTHONPATH", str(REPO))
    parts = args.only or [
        "overhead",
        "startup",
        "default",
        "data",
        "pruning",
        "techniques",
        "cuda",
        "ddp",
        "cifar",
        "cifar_cuda",
        "stream",
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        steps = {
            "overhead": lambda: bench_overhead("cpu"),
            "startup": lambda: bench_startup(tmp),
            "default": lambda: bench_default_run(tmp),
            "data": bench_data,
            "pruning": bench_pruning,
            "techniques": lambda: bench_techniques(tmp, args.full_techniques),
            "cuda": bench_cuda,
            "ddp": lambda: bench_ddp(tmp),
            "cifar": lambda: bench_cifar("cpu"),
            "cifar_cuda": lambda: bench_cifar("cuda"),
            "stream": lambda: bench_stream(tmp),
        }
        for part in parts:
            print(f"[bench] {part} ...", flush=True)
            steps[part]()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": machine(), "results": RESULTS, "bench_wall_s": time.perf_counter() - t0}, indent=2
        )
    )
    print_table()
    if args.md:
        Path(args.md).write_text(markdown_table(time.perf_counter() - t0))
    print(f"bench wall time {time.perf_counter() - t0:.0f} s; JSON: {out}")
    _ = resource  # (ru_maxrss is read in the child wrapper)


if __name__ == "__main__":
    main()
