"""Checkpoints: written atomically, read with `weights_only=True` (no code runs on load).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. Anything that
is not (a numpy array, an Enum) is converted before saving so `torch.load(...,
weights_only=True)` always works.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import PdlError

# 2: technique state as per-phase records, extra["phases"][name] (0.2). Format 1 (0.1)
# checkpoints are read through _upgrade_v1.
FORMAT_VERSION = 2


class CheckpointError(PdlError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupted or of another run's kind."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file torch cannot read: truncated, corrupted, or not a torch file."""


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never half of one. A full
    disk is one CheckpointError line naming the file; the old file stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(e):
            raise CheckpointError(
                f"cannot save checkpoint {path}: no space left on device (any earlier {path.name} is "
                "intact); free space, then run the same command with trainer.resume=auto"
            ) from e
        raise
    return path


def _disk_full(err: BaseException | None) -> bool:
    """ENOSPC, raised by Python's write or behind torch's writer's RuntimeError (its context)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def resolve_checkpoint(path: str | os.PathLike, name: str = "last.pt") -> Path:
    """A checkpoint file, or a run directory (then <dir>/checkpoints/<name>)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / name, p / name):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoints/{name} in run directory {p}")
    if not p.exists():
        raise CheckpointError(f"checkpoint path does not exist: {p}")
    return p


def load_checkpoint(path: str | os.PathLike, name: str = "last.pt") -> dict:
    """Load a checkpoint safely; every failure is one CheckpointError line."""
    p = resolve_checkpoint(path, name)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, forbidden global, ...
        why = (
            "it holds objects other than tensors and plain values, and is refused"
            if "Unsupported global" in str(e) or "GLOBAL" in str(e)
            else "truncated, corrupted or not a torch checkpoint"
        )
        raise UnreadableCheckpoint(f"cannot read checkpoint {p}: {why}") from e
    if isinstance(ckpt, dict) and ckpt.get("format") == 1:
        return _upgrade_v1(ckpt)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p} is not a pdl-experiments checkpoint (format {FORMAT_VERSION})")
    return ckpt


def _upgrade_v1(ckpt: dict) -> dict:
    """A 0.1 checkpoint in today's layout: what each technique kept loose in `extra` becomes
    its phases' records; a finished phase (phases_done) stays finished."""
    old, done = dict(ckpt.get("extra") or {}), list(ckpt.get("phases_done") or [])
    phases: dict[str, dict] = {}
    if "genotype" in old:  # nas
        keys = (
            "genotype",
            "genotype_source",
            "alpha_entropy_start",
            "alpha_entropy_end",
            "search_time_s",
            "supernet_val_acc",
            "alpha",
        )
        phases["search"] = {k: old[k] for k in keys if k in old}
        done = sorted(set(done) | {"search"}, key=["search", "retrain"].index)
    elif "alpha_entropy_start" in old:
        phases["search"] = {"alpha_entropy_start": old["alpha_entropy_start"]}
    if "adv_baseline" in old:
        phases["baseline"] = dict(old["adv_baseline"])
    if ckpt.get("technique") == "adv" and "train" in done and ckpt.get("phase") == "surrogate":
        phases["train"] = {"weights": {k[6:]: v for k, v in ckpt["task"].items() if k.startswith("model.")}}
    if "gan/fid_untrained" in old:
        phases["gan"] = {"fid_untrained": old["gan/fid_untrained"]}
    if ckpt.get("technique") == "gan" and ckpt.get("phase") == "gan" and "classifier" not in done:
        done.insert(0, "classifier")  # the judge came from its cache; its weights are in the task
    if "prune" in old:
        prune = old["prune"]
        phases["train"] = {**prune.get("before", {}), "widths": prune.get("widths", {})}
        rounds = prune.get("rounds", [])
        names = (
            ["finetune"]
            if str(ckpt.get("phase")) == "finetune" or "finetune" in done
            else [f"finetune{k}" for k in range(1, len(rounds) + 1)]
        )
        phases.update({name: dict(r) for name, r in zip(names, rounds, strict=False)})
        done = sorted(
            set(done) | ({"train"} if "before" in prune else set()), key=lambda n: (n != "train", n)
        )
    current = str(ckpt.get("phase"))
    if current in done:  # format 1 marked a phase done as its training ended: re-enter it
        done.remove(current)
    return {**ckpt, "format": FORMAT_VERSION, "extra": {"phases": phases}, "phases_done": done}


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x: Any) -> Any:
    """Tuples to lists, recursively (weights_only loads lists of ints happily)."""
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    return x
