"""The trainer's speed switches (training/speed.py) and the synthetic datasets, on the CPU.

trainer.channels_last and trainer.compile must not change what a run computes or what its
checkpoints hold; dataset=synthetic gives learnable images of the shapes users scale to.
"""

from __future__ import annotations

import pytest
import torch

from pdl_experiments.training import speed

from helpers import compose, run_small

SMALL = [
    "dataset.subset=300",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.num_threads=1",
    "bn.diagnostics=false",
]


def _task(model: str = "cnn"):
    from hydra.utils import instantiate

    from pdl_experiments.models import BatchNormSpec, build_model
    from pdl_experiments.training.task import ClassificationTask

    cfg = compose([f"model={model}"])
    data = instantiate(cfg.dataset, _convert_="all")
    return ClassificationTask(build_model(cfg.model, data.info, BatchNormSpec())), data


def test_channels_last_converts_the_networks_and_their_inputs_and_keeps_the_state_dict():
    task, data = _task("cnn")
    keys = list(task.state_dict())
    speed.prepare(task, compose(["trainer.channels_last=true"]).trainer)
    speed.prepare(task, compose(["trainer.channels_last=true"]).trainer)  # every fit: idempotent
    convs = [m for m in task.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    seen = []
    convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = data.train[0][:8]
    assert x.is_contiguous()  # (N, C, H, W) as the loader gives it
    task.model(x)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert list(task.state_dict()) == keys
    fresh, _ = _task("cnn")
    fresh.load_state_dict(task.state_dict())  # a checkpoint of it loads into a plain model


def test_a_channels_last_run_computes_what_a_plain_one_does(tmp_path):
    plain, _ = run_small(tmp_path, [*SMALL, "model=cnn"], name="plain")
    nhwc, _ = run_small(tmp_path, [*SMALL, "model=cnn", "trainer.channels_last=true"], name="nhwc")
    for k in ("val/loss", "test/loss", "val/acc", "final/train_acc"):
        assert nhwc[k] == pytest.approx(plain[k], rel=1e-4), k


def test_compile_trains_and_checkpoints_with_the_plain_modules_keys(tmp_path, monkeypatch):
    # The eager backend: torch.compile's tracing and the module's compiled call, without the
    # C++ code generation of inductor (tens of seconds on a CPU; the slow test below has it).
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend="eager"))
    plain, _ = run_small(tmp_path, [*SMALL, "model=mlp"], name="plain")
    compiled, run_dir = run_small(tmp_path, [*SMALL, "model=mlp", "trainer.compile=true"], name="compiled")
    keys = [k for k in plain if "loss" in k or "acc" in k]
    assert {k: compiled[k] for k in keys} == pytest.approx({k: plain[k] for k in keys}, rel=1e-6)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in best["task"])
    from pdl_experiments import load_run

    loaded = load_run(run_dir)
    assert set(loaded.model.state_dict()) == {k.removeprefix("model.") for k in best["task"]}


@pytest.mark.slow
def test_compile_with_inductor(tmp_path):
    metrics, run_dir = run_small(tmp_path, [*SMALL, "model=mlp", "trainer.compile=true"])
    assert metrics["test/acc"] > 0.3
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in best["task"])
