"""training/checkpoint.py: atomic writes, weights_only loading, a pickled payload refused."""

from __future__ import annotations

import os

import pytest
import torch


def test_malicious_checkpoint_is_refused_not_executed(tmp_path):
    from pdl_experiments.training.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused|cannot read"):
        load_checkpoint(path)
    assert not marker.exists()


def test_atomic_save_never_leaves_half_a_file(tmp_path):
    from pdl_experiments.training.checkpoint import save_atomic

    target = tmp_path / "last.pt"
    save_atomic({"format": 1, "x": torch.zeros(3)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomic({"format": 1, "x": Boom()}, target)
    assert torch.load(target, weights_only=True)["x"].shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoints_load_with_weights_only(default_run):
    _, run_dir = default_run
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert ckpt["technique"] == "bn" and "task" in ckpt
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
