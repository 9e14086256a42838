"""parallel/distributed.py: what a rank uses (the SyncBatchNorm conversion). Real runs of
several processes: e2e/test_distributed.py."""

from __future__ import annotations

import torch
from torch import nn

from pdl_experiments.parallel.distributed import convert_sync_bn


def test_sync_bn_conversion_keeps_parameters_and_state():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    )
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    convert_sync_bn(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][1], nn.SyncBatchNorm)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))  # optimizers still hold them
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
