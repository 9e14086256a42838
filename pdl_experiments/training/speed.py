"""The trainer's GPU speed switches, beside bf16 autocast (`trainer.amp`): both off by default.

* `trainer.channels_last`: the task's networks hold their 4-D weights in channels_last (NHWC)
  memory format, and every 4-D input of a network is converted on the way in (a forward
  pre-hook on each network), so convolutions run NHWC: on CUDA with bf16 that is the layout
  tensor cores want (cuDNN otherwise transposes around every convolution).
* `trainer.compile`: each network of the task is compiled in place (`nn.Module.compile`,
  i.e. torch.compile of its call). The module, its parameters and its `state_dict` keys stay
  what they were (no `_orig_mod.` prefix), so checkpoints save and load exactly as without it
  and the optimizers see the same parameters. The first steps pay the compilation.

`prepare(task, cfg)` is called by the trainer every time it moves a task to its device (each
fit: a pruned network is a new architecture, compiled and converted again). A task's
"networks" are its direct sub-modules that hold parameters (ClassificationTask's model, the
GAN's generator, discriminator and judge, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_HOOKED = "_pdl_channels_last_hook"


def prepare(task: nn.Module, cfg: Any) -> nn.Module:
    """Apply the configured switches to the task's networks, in place; returns the task."""
    channels_last = bool(getattr(cfg, "channels_last", False))
    compile_ = bool(getattr(cfg, "compile", False))
    if not (channels_last or compile_):
        return task
    for net in networks(task):
        if channels_last:
            net.to(memory_format=torch.channels_last)
            if not hasattr(net, _HOOKED):
                setattr(net, _HOOKED, net.register_forward_pre_hook(_nhwc_inputs))
        if compile_ and getattr(net, "_compiled_call_impl", None) is None:
            net.compile()
    return task


def networks(task: nn.Module) -> list[nn.Module]:
    """The task's direct sub-modules that hold parameters."""
    return [m for m in task.children() if any(True for _ in m.parameters())]


def _nhwc_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
        for a in args
    )
