"""models/darts.py: DARTS' search space (the search and the derived networks, the operations),
the derivation of a genotype, a random genotype."""

from __future__ import annotations

import re

import pytest
import torch

from pdl_experiments.data import DataInfo
from pdl_experiments.models import count_params
from pdl_experiments.models.darts import (
    OPS,
    DerivedNetwork,
    SearchNetwork,
    check_ops,
    derive_genotype,
    edge_inputs,
    random_genotype,
    skip_count,
)
from pdl_experiments.models.norm import BatchNormSpec

from helpers import compose

ALL_OPS = list(OPS)
DEFAULT_OPS = ["conv_3x3", "conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "none"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one thread is as fast, and a busy CPU makes two spin (several x the CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _info(shape):
    return DataInfo("t", in_shape=shape, num_classes=10, mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_networks_build_for_digits_and_cifar_shapes(shape):
    torch.manual_seed(0)
    info, norm = _info(shape), BatchNormSpec()
    net = SearchNetwork(info, norm, ALL_OPS, nodes=3, cells=2, channels=4)
    x = torch.rand(2, *shape)
    assert net(x).shape == (2, 10)
    assert net.alpha.shape == (2 + 3 + 4, len(ALL_OPS))  # one row per edge, shared by cells
    assert all(p is not net.alpha for p in net.weight_parameters())
    assert len(net.weight_parameters()) == len(list(net.parameters())) - 1
    genotype = derive_genotype(net.cell_weights(), ALL_OPS, nodes=3)
    derived = DerivedNetwork(info, norm, genotype, cells=2, channels=4)
    assert derived(x).shape == (2, 10)
    assert count_params(derived) < count_params(net)


def test_every_op_keeps_the_shape():
    x = torch.rand(2, 6, 8, 8)
    for name, make in OPS.items():
        assert make(6, BatchNormSpec())(x).shape == x.shape, name


def test_unknown_op_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'; allowed: conv_3x3, .*none"):
        check_ops(["conv_3x3", "conv_7x7"])
    from pdl_experiments.cli.messages import one_line

    with pytest.raises(Exception) as err:
        compose(["technique=nas", "nas.ops=[conv_3x3,conv_7x7]"])
    assert re.fullmatch(
        r"nas.ops\[1\]=conv_7x7: Invalid value "
        r"'conv_7x7', expected one of \[conv_3x3, .*, none\]",
        one_line(err.value),
    )


def test_derive_keeps_two_strongest_edges_per_node_ignoring_none():
    ops = ["conv_3x3", "skip_connect", "none"]
    w = torch.full((len(edge_inputs(2)), 3), 0.1)  # edges: (2,0) (2,1) (3,0) (3,1) (3,2)
    w[0] = torch.tensor([0.2, 0.1, 0.7])  # strongest is none: only 0.2 counts
    w[1] = torch.tensor([0.1, 0.5, 0.4])
    w[3] = torch.tensor([0.6, 0.3, 0.1])
    w[4] = torch.tensor([0.1, 0.8, 0.1])
    genotype = derive_genotype(w, ops, nodes=2)
    assert genotype == [[["conv_3x3", 0], ["skip_connect", 1]], [["conv_3x3", 1], ["skip_connect", 2]]]
    assert skip_count(genotype) == 2


def test_random_genotype_is_seeded_and_inside_the_space():
    draw = lambda s: random_genotype(DEFAULT_OPS, 4, torch.Generator().manual_seed(s))
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    for j, node in enumerate(draw(5)):
        inputs = [i for _, i in node]
        assert len(set(inputs)) == 2 and all(0 <= i < 2 + j for i in inputs)
        assert all(op in DEFAULT_OPS and op != "none" for op, _ in node)


@pytest.mark.parametrize("impl", ["torch", "course"])
def test_a_search_cell_norm_has_no_affine_parameters(impl):
    """DARTS' search cell normalises without gamma/beta (nas.search builds it with affine=False)."""
    from dataclasses import replace

    spec = replace(BatchNormSpec(impl=impl), affine=False)
    net = SearchNetwork(_info((1, 8, 8)), spec, ["conv_3x3", "skip_connect"], nodes=2, cells=1, channels=3)
    norms = [m for m in net.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(m.weight is None and m.bias is None for m in norms)
    x = torch.rand(4, 1, 8, 8)
    assert net(x).shape == (4, 10)
    affine = SearchNetwork(
        _info((1, 8, 8)), BatchNormSpec(impl=impl), ["conv_3x3"], nodes=2, cells=1, channels=3
    )
    assert all(m.weight is not None for m in affine.modules() if "BatchNorm" in type(m).__name__)
