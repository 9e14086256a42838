"""What a run asks of its surroundings: the device, the seeds, Hydra's runtime (the run dir,
the group choices, the command line's overrides), a writable output directory.

flow.py's helpers, apart so that the flow reads as the run's flow.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..config import ConfigError


def resolve_device(name: str) -> torch.device:
    name = str(name)
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is available; use auto or cpu")
    if name == "mps" and not mps:
        raise ConfigError("trainer.device=mps but MPS is not available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def choices() -> dict[str, str]:
    """The option of each group this run was composed with ({} outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {g: str(c) for g, c in HydraConfig.get().runtime.choices.items() if c is not None}
    except ValueError:
        return {}


def command_line_groups() -> set[str]:
    """Groups chosen on the command line (`model=mlp`), not by a default."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task if "=" in o}
    except ValueError:
        return set()


def group_choice(group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group))
    except ValueError:  # not running under Hydra (tests, notebooks)
        return "?"


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"output directory {run_dir} is not writable ({e.strerror}); "
            "set hydra.run.dir (or hydra.sweep.dir) to a writable place"
        ) from e
