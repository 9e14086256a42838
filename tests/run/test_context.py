"""Every technique, killed in each of its phases and resumed, ends as an uninterrupted run.

A real SIGINT / SIGTERM is sent to this process while the chosen phase trains (mid-way
through its second epoch); the run's own handler finishes the step, writes last.pt and
stops. The same command with trainer.resume=<run dir> must then give the same final
metrics as a run that was never interrupted. One test, over the registry.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from pdl_experiments.techniques import TECHNIQUES
from pdl_experiments.training import Interrupted, Trainer

from helpers import run_small

# Tiny settings of each technique, and the phases its recipe goes through with them.
RECIPES = {
    "bn": (["trainer.max_epochs=3", "dataset.subset=300"], ["train"]),
    "prune": (
        [
            "dataset.subset=300",
            "trainer.max_epochs=2",
            "prune.level=filter",
            "prune.iterations=2",
            "prune.finetune_epochs=2",
            "prune.latency_repeats=1",
        ],
        ["train", "finetune1", "finetune2"],
    ),
    "adv": (
        [
            "dataset.subset=300",
            "trainer.max_epochs=2",
            "adv.train=true",
            "adv.blackbox=true",
            "adv.surrogate_data=queries",
            "adv.surrogate_epochs=2",
            "adv.eval_eps=[0,0.1]",
            "adv.pgd_steps=2",
            "adv.grid=0",
        ],
        ["baseline", "train", "surrogate"],
    ),
    "gan": (
        ["dataset.subset=300", "gan.classifier_epochs=2", "trainer.max_epochs=2", "gan.n_samples=200"],
        ["classifier", "gan"],
    ),
    "nas": (
        [
            "dataset.subset=300",
            "nas.channels=8",
            "nas.nodes=2",
            "nas.search_epochs=2",
            "nas.retrain_epochs=2",
        ],
        ["search", "retrain"],
    ),
    "attention": (
        [
            "dataset.length=8",
            "dataset.n_train=400",
            "dataset.n_val=100",
            "dataset.n_test=100",
            "model.hidden=32",
            "trainer.max_epochs=2",
        ],
        ["train"],
    ),
}
CASES = [(t, p) for t in TECHNIQUES for p in RECIPES[t][1]]
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def overrides(technique: str, cache) -> list[str]:
    return [
        f"technique={technique}",
        "trainer.num_threads=1",
        *RECIPES[technique][0],
        f"gan.cache_dir={cache}",
    ]  # a judge cache of the run's own: the judge trains in it


def comparable(metrics: dict) -> dict:
    """The metrics a resume must reproduce: not timings and latencies (they vary run to run)
    nor checkpoint sizes (a checkpoint holds its run's config, which names trainer.resume)."""
    skip = ("time", "wall", "latency", "per_s", "ckpt_")
    return {k: v for k, v in metrics.items() if not any(w in k for w in skip)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    done: dict[str, dict] = {}

    def get(technique: str) -> dict:
        if technique not in done:
            tmp = tmp_path_factory.mktemp(f"clean_{technique}")
            done[technique], _ = run_small(tmp, overrides(technique, tmp / "cache"))
        return done[technique]

    return get


def test_every_technique_has_its_phases_listed():
    assert set(RECIPES) == set(TECHNIQUES)


@pytest.mark.parametrize("technique,phase", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_killed_in_each_phase_resumes_to_the_same_metrics(
    tmp_path, monkeypatch, uninterrupted, technique, phase
):
    sig = SIGNALS[CASES.index((technique, phase)) % 2]
    begin, optimize = Trainer._begin, Trainer.optimize
    where: dict = {}

    def begin_noting_the_phase(self, task, train_loader, val_loader, name, *args):
        where.update(phase=name, start=self.global_step, batches=len(train_loader))
        return begin(self, task, train_loader, val_loader, name, *args)

    def optimize_then_signal(self, loss, name="default"):
        optimize(self, loss, name)
        # Epoch 2, batch 2 of the chosen phase: a real signal, caught by the run's handler.
        if (
            where["phase"] == phase
            and self.global_step - where["start"] == where["batches"] + 1
            and not where.get("sent")
        ):
            where["sent"] = True
            os.kill(os.getpid(), sig)

    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    monkeypatch.setattr(Trainer, "_begin", begin_noting_the_phase)
    monkeypatch.setattr(Trainer, "optimize", optimize_then_signal)
    try:
        with pytest.raises(Interrupted) as stopped:
            run_small(tmp_path, overrides(technique, tmp_path / "cache"), name="killed")
    finally:
        monkeypatch.undo()
        for s, h in handlers.items():
            signal.signal(s, h)
    assert stopped.value.signum == sig
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert last["phase"] == phase and not last["phase_complete"] and last["loop"]["batch"] == 2
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed, _ = run_small(
        tmp_path,
        [*overrides(technique, tmp_path / "cache"), f"trainer.resume={tmp_path / 'killed'}"],
        name="resumed",
    )
    expected = comparable(uninterrupted(technique))
    got = comparable(resumed)
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
