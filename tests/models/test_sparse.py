"""models/sparse.py: the weight masks' bits, packed and unpacked."""

from __future__ import annotations

import torch


def test_bits_pack_and_unpack_exactly():
    from pdl_experiments.models.sparse import pack_bits, unpack_bits

    for shape in [(1,), (7,), (8,), (3, 5, 3, 3), (10, 13)]:
        mask = torch.rand(shape) > 0.6
        bits = pack_bits(mask)
        assert bits.dtype == torch.uint8 and bits.numel() == -(-mask.numel() // 8)
        assert torch.equal(unpack_bits(bits, shape), mask)
