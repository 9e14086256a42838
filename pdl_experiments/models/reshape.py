"""Rebuild a pruned architecture from the tensor shapes recorded in a state dict."""

from __future__ import annotations

import torch
from torch import nn


def reshape_to_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Resize every parameter and buffer of `model` whose shape differs in `state_dict`.

    Works in place on the same module classes (what Torch-Pruning does when it removes
    channels), and keeps the shape attributes (in_channels, out_features, num_features)
    consistent so the model prints and re-prunes correctly.
    """
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for store in (module._parameters, module._buffers):
            for name, tensor in list(store.items()):
                key = prefix + name
                if tensor is None or key not in state_dict:
                    continue
                target = state_dict[key]
                if target.shape == tensor.shape:
                    continue
                new = torch.empty(target.shape, dtype=tensor.dtype, device=tensor.device)
                store[name] = (
                    nn.Parameter(new, requires_grad=tensor.requires_grad)
                    if isinstance(tensor, nn.Parameter)
                    else new
                )
        _sync_shape_attributes(module)
    return model


def _sync_shape_attributes(m: nn.Module) -> None:
    w = getattr(m, "weight", None)
    if isinstance(m, nn.modules.conv._ConvNd) and w is not None:
        m.out_channels = w.shape[0]
        m.in_channels = w.shape[1] * m.groups
    elif isinstance(m, nn.Linear) and w is not None:
        m.out_features, m.in_features = w.shape
    elif hasattr(m, "num_features") and (running_mean := getattr(m, "running_mean", None)) is not None:
        m.num_features = running_mean.shape[0]


def drop_absent_blocks(model: nn.Module, state_dict: dict, prefix: str = "") -> None:
    """Blocks of `model.blocks` the state dict holds no weights of were removed (layer
    pruning): make them the identity too, before the weights load."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        for i in range(len(blocks)):
            if not any(k.startswith(f"{prefix}blocks.{i}.") for k in state_dict):
                blocks[i] = nn.Identity()
