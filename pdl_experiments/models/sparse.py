"""Masked (weight-pruned) layers, and their compact storage in checkpoints.

torch.nn.utils.prune keeps a masked weight as `weight_orig` (dense) plus `weight_mask`
(dense float): twice the dense size. `attach_packing(module)` makes the module's state
dict hold instead `weight_values` (the kept entries, row-major), `weight_bits` (the mask,
1 bit per entry) and `weight_shape`; loading expands them again. Entries under the mask
are dropped: the pruning code zeroes them in `weight_orig` too, so nothing is lost and
resumes are exact. At 90% sparsity a checkpoint is about a fifth of the dense size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .common import weight_layers

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def effective_weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (masked while masks are attached)."""
    # Tensors all three: weight_orig is a parameter, weight_mask a buffer, weight a parameter
    # or (while masked) the plain tensor torch.nn.utils.prune sets before each forward.
    if hasattr(m, "weight_mask"):
        return cast(torch.Tensor, m.weight_orig) * cast(torch.Tensor, m.weight_mask)
    return cast(torch.Tensor, m.weight)


def make_permanent(model: nn.Module) -> None:
    """Fold every weight mask into its weight (zeros stay zeros, the mask hooks go)."""
    for _, m in weight_layers(model):
        if hasattr(m, "weight_mask"):
            tprune.remove(m, "weight")


def attach_packing(module: nn.Module) -> None:
    """Store this module's masked weights packed (see the module docstring)."""
    module.register_state_dict_post_hook(_pack_masked)
    module.register_load_state_dict_pre_hook(_unpack_masked)


def attach_masks_for(module: nn.Module, state_dict: dict) -> None:
    """Attach (all-ones) masks wherever `state_dict` holds packed weights, so they load."""
    for key in state_dict:
        if key.endswith("_bits") and key[: -len("_bits")] + "_values" in state_dict:
            owner, name = _owner(module, key[: -len("_bits")])
            if not hasattr(owner, name + "_mask"):
                tprune.custom_from_mask(owner, name, torch.ones_like(getattr(owner, name)))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 tensor as uint8 bytes, 8 entries per byte, row-major."""
    flat = mask.flatten().ne(0).to(torch.uint8).cpu()
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)  # (N/8, 8)
    return (flat * _BIT_WEIGHTS).sum(1).to(torch.uint8)


def unpack_bits(bits: torch.Tensor, shape: Iterable[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    flat = bits.cpu().unsqueeze(1).bitwise_and(_BIT_WEIGHTS).ne(0).flatten()  # (N/8 * 8,)
    return flat[: math.prod(shape)].view(shape)


def unpack_sparse(state_dict: dict, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense weight, bool mask) of a packed entry `<stem>_values/_bits/_shape`."""
    values = state_dict[stem + "_values"]
    mask = unpack_bits(state_dict[stem + "_bits"], state_dict[stem + "_shape"].tolist())
    dense = torch.zeros(mask.shape, dtype=values.dtype).masked_scatter_(mask, values.cpu())
    return dense.to(values.device), mask.to(values.device)


def _pack_masked(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith("_mask")]:
        stem = key[: -len("_mask")]
        if stem + "_orig" not in state_dict:
            continue
        mask = state_dict.pop(key)
        orig = state_dict.pop(stem + "_orig")
        state_dict[stem + "_values"] = orig[mask.bool()]  # (nnz,)
        state_dict[stem + "_bits"] = pack_bits(mask)
        state_dict[stem + "_shape"] = torch.tensor(orig.shape)


def _unpack_masked(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith("_bits")]:
        stem = key[: -len("_bits")]
        if stem + "_values" not in state_dict:
            continue
        dense, mask = unpack_sparse(state_dict, stem)
        for k in ("_bits", "_values", "_shape"):
            state_dict.pop(stem + k)
        owner, name = _owner(module, stem[len(prefix) :])
        if hasattr(owner, name + "_orig"):  # masks attached: keep them on
            state_dict[stem + "_orig"] = dense
            state_dict[stem + "_mask"] = mask.to(dense.dtype)
        else:
            state_dict[stem] = dense


def _owner(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    path, _, name = dotted.rpartition(".")
    return (root.get_submodule(path) if path else root), name
