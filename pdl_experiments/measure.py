"""What a model costs: parameters, non-zeros, FLOPs, CPU latency (technique=prune and
scripts/bench.py measure the same way)."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from .models.common import count_params


def count_nonzero(model: nn.Module) -> int:
    """Non-zero parameters, masked ones counted as the layer computes with them."""
    total = 0
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if name.endswith("_orig"):
                p = p * getattr(m, name[: -len("_orig")] + "_mask")
            total += int(p.count_nonzero())
    return total


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass over x; FlopCounterMode counts 2 per multiply-accumulate."""
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x.cpu())
    return int(counter.get_total_flops())


def cpu_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median CPU time of a forward pass over x per model (eval, no_grad, after warm-up).

    The models take turns within each repeat, so a machine whose load changes during the
    measurement slows all of them alike; the run's torch thread setting is left as it is.
    """
    cpu = {k: copy.deepcopy(m).cpu().eval() for k, m in models.items()}
    x = x.cpu()
    times: dict[str, list[float]] = {k: [] for k in cpu}
    with torch.no_grad():
        for m in cpu.values():
            for _ in range(3):
                m(x)
        for _ in range(repeats):
            for k, m in cpu.items():
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


__all__ = ["count_flops", "count_nonzero", "count_params", "cpu_latency_ms"]
