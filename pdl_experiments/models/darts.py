"""DARTS search space: candidate ops, the mixed op, cells, the search and derived networks.

A cell is a small DAG. Nodes 0 and 1 are its inputs (the outputs of the two previous
cells); each of the `nodes` intermediate nodes is the sum of one op applied to every
earlier node; the cell's output is the concatenation of its intermediate nodes.

    search:  every edge i -> j is a MixedOp, sum_o softmax(alpha[e])_o * o(x), with one
             row of alpha per edge shared by all cells (as in DARTS' normal cell)
    derived: a genotype keeps, per intermediate node, 2 incoming edges with one op each

A genotype is plain data, JSON- and checkpoint-friendly:
    [[[op, input], [op, input]],   # node 2
     [[op, input], [op, input]],   # node 3
     ...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..data import DataInfo
from .common import Normalize, count_params
from .norm import BatchNormSpec

Genotype = list  # list (per intermediate node) of [op, input] pairs


# -- candidate operations ------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN: DARTS' ordering, so every op's output is normalised alike."""

    def __init__(self, c_in: int, c_out: int, k: int, norm: BatchNormSpec, dilation: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, padding=dilation * (k - 1) // 2, dilation=dilation, bias=norm.bias),
            norm(c_out, 2),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated 3x3 (5x5 receptive field) -> pointwise 1x1 -> BN."""

    def __init__(self, c: int, norm: BatchNormSpec, k: int = 3, dilation: int = 2):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=norm.bias),
            norm(c, 2),
        )


class SepConv(nn.Sequential):
    """Two depthwise-separable 3x3 convs in a row (DARTS' sep_conv_3x3)."""

    def __init__(self, c: int, norm: BatchNormSpec, k: int = 3):
        super().__init__(DilConv(c, norm, k, dilation=1), DilConv(c, norm, k, dilation=1))


class Zero(nn.Module):
    """The 'none' op: an edge that carries nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


# name -> builder(channels, norm). Every op keeps the shape (B, C, H, W).
OPS: dict[str, Callable[[int, BatchNormSpec], nn.Module]] = {
    "conv_3x3": lambda c, norm: ReLUConvBN(c, c, 3, norm),
    "conv_5x5": lambda c, norm: ReLUConvBN(c, c, 5, norm),
    "dil_conv_3x3": lambda c, norm: DilConv(c, norm),
    "sep_conv_3x3": lambda c, norm: SepConv(c, norm),
    "max_pool_3x3": lambda c, norm: nn.MaxPool2d(3, stride=1, padding=1),
    "avg_pool_3x3": lambda c, norm: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "skip_connect": lambda c, norm: nn.Identity(),
    "none": lambda c, norm: Zero(),
}
POOLS = ("max_pool_3x3", "avg_pool_3x3")


def check_ops(ops: Sequence[str]) -> list[str]:
    ops = [str(o) for o in ops]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r}; allowed: {', '.join(OPS)}")
    return ops


class MixedOp(nn.Module):
    """sum_o w_o * o(x) over the candidate ops, w = softmax of this edge's alpha row."""

    def __init__(self, ops: Sequence[str], c: int, norm: BatchNormSpec):
        super().__init__()
        self.names = list(ops)
        built = []
        for name in self.names:
            op = OPS[name](c, norm)
            if name in POOLS:
                # A pool's output is not normalised like the conv ops' are: without a BN it
                # competes on another scale (DARTS adds one during the search, too).
                op = nn.Sequential(op, norm(c, 2))
            built.append(op)
        self.ops = nn.ModuleList(built)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # weights (O,)
        # "none" adds zero: it only takes its share of the softmax, so skip computing it.
        return sum(
            w * op(x) for name, w, op in zip(self.names, weights, self.ops, strict=True) if name != "none"
        )


# -- cells and the network ---------------------------------------------------------------
def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """(node, input) for every edge of the dense cell, in alpha's row order."""
    return [(2 + j, i) for j in range(nodes) for i in range(2 + j)]


class Cell(nn.Module):
    """Two 1x1-preprocessed inputs, `nodes` intermediate nodes, output = concat of them.

    `wiring[k] = (node, input)` says where edge k (self.edges[k]) reads and writes; the
    search cell wires every pair, a derived cell only its genotype's.
    """

    def __init__(
        self,
        c_prev_prev: int,
        c_prev: int,
        c: int,
        nodes: int,
        norm: BatchNormSpec,
        wiring: list[tuple[int, int]],
        edges: list[nn.Module],
    ):
        super().__init__()
        self.pre0 = ReLUConvBN(c_prev_prev, c, 1, norm)
        self.pre1 = ReLUConvBN(c_prev, c, 1, norm)
        self.nodes = nodes
        self.wiring = wiring
        self.edges = nn.ModuleList(edges)

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:  # weights (E, O)
        states = [self.pre0(s0), self.pre1(s1)]  # each (B, C, H, W)
        for node in range(2, 2 + self.nodes):
            terms = [
                edge(states[i]) if weights is None else edge(states[i], weights[k])
                for k, ((n, i), edge) in enumerate(zip(self.wiring, self.edges, strict=True))
                if n == node
            ]
            states.append(sum(terms))
        return torch.cat(states[2:], dim=1)  # (B, nodes * C, H, W)


class DartsNetwork(nn.Module):
    """stem -> cells -> global average pool -> linear.

    Cells keep the map size; between cells both carried states are max-pooled 2x2 while
    the map is at least 8 wide, so the same net fits 8x8 digits (8 -> 4) and 32x32 images
    (32 -> 16 -> 8 -> ...).
    """

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        nodes: int,
        cells: int,
        channels: int,
        make_cell_edges: Callable[[int], tuple[list, list]],
    ):
        super().__init__()
        c = channels
        self.normalize = Normalize(info.mean, info.std)
        self.stem = nn.Sequential(nn.Conv2d(info.in_shape[0], c, 3, padding=1, bias=norm.bias), norm(c, 2))
        size = info.in_shape[1]
        c_prev_prev, c_prev = c, c
        self.cells = nn.ModuleList()
        self.pool_after: list[bool] = []
        for i in range(cells):
            wiring, edges = make_cell_edges(c)
            self.cells.append(Cell(c_prev_prev, c_prev, c, nodes, norm, wiring, edges))
            c_prev_prev, c_prev = c_prev, nodes * c
            pool = i < cells - 1 and size >= 8
            self.pool_after.append(pool)
            size = size // 2 if pool else size
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Linear(c_prev, info.num_classes)

    def cell_weights(self) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, classes)
        weights = self.cell_weights()
        s0 = s1 = self.stem(self.normalize(x))  # (B, C, H, W)
        for cell, pool in zip(self.cells, self.pool_after, strict=True):
            s0, s1 = s1, cell(s0, s1, weights)
            if pool:
                s0, s1 = self.pool(s0), self.pool(s1)
        return self.classifier(s1.mean(dim=(2, 3)))


class SearchNetwork(DartsNetwork):
    """The supernet: every edge a MixedOp; alpha (edges x ops) is shared by all cells."""

    def __init__(
        self,
        info: DataInfo,
        norm: BatchNormSpec,
        ops: Sequence[str],
        nodes: int = 3,
        cells: int = 2,
        channels: int = 16,
    ):
        ops = check_ops(ops)
        wiring = edge_inputs(nodes)
        super().__init__(
            info, norm, nodes, cells, channels, lambda c: (wiring, [MixedOp(ops, c, norm) for _ in wiring])
        )
        self.ops = ops
        # Near-uniform start: every op gets the same chance, the entropy starts at its max.
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(wiring), len(self.ops)))

    def cell_weights(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=-1)  # (E, O)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]


class DerivedNetwork(DartsNetwork):
    """The discrete network of a genotype: one op per kept edge, trained from scratch."""

    def __init__(
        self, info: DataInfo, norm: BatchNormSpec, genotype: Genotype, cells: int = 2, channels: int = 16
    ):
        genotype = [[[str(op), int(i)] for op, i in node] for node in genotype]
        check_ops([op for node in genotype for op, _ in node])
        wiring = [(2 + j, i) for j, node in enumerate(genotype) for _, i in node]

        def make(c: int):
            return wiring, [OPS[op](c, norm) for node in genotype for op, _ in node]

        super().__init__(info, norm, len(genotype), cells, channels, make)
        self.genotype = genotype


def channels_for_params(
    info: DataInfo, norm: BatchNormSpec, genotype: Genotype, cells: int, budget: int, most: int = 1024
) -> int:
    """The channel count at which the genotype's DerivedNetwork has the parameter count
    nearest `budget` (ties: the smaller network). Parameters grow with the channels."""

    def params(c: int) -> int:
        return count_params(DerivedNetwork(info, norm, genotype, cells, c))

    hi = 1
    while params(hi) < budget and hi < most:
        hi = min(2 * hi, most)
    lo = max(1, hi // 2)
    while lo < hi:  # the first channel count with params >= budget
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if params(mid) < budget else (lo, mid)
    if lo > 1 and budget - params(lo - 1) <= params(lo) - budget:
        return lo - 1
    return lo


# -- genotypes -----------------------------------------------------------------------------
def derive_genotype(weights: torch.Tensor, ops: Sequence[str], nodes: int, keep: int = 2) -> Genotype:
    """Per node, the `keep` incoming edges whose strongest non-none op is strongest, each
    with that op. weights: (E, O) softmax(alpha), rows in edge_inputs(nodes) order."""
    ops = list(ops)
    real = [k for k, o in enumerate(ops) if o != "none"]
    w = weights.detach().float().cpu()[:, real]  # (E, O') without "none"
    genotype, row = [], 0
    for j in range(nodes):
        n_in = 2 + j
        best_w, best_op = w[row : row + n_in].max(dim=1)  # (n_in,)
        # Stable sort, so ties go to the earlier input and the result is deterministic.
        chosen = sorted(torch.sort(-best_w, stable=True).indices[:keep].tolist())
        genotype.append([[ops[real[best_op[i]]], i] for i in chosen])
        row += n_in
    return genotype


def random_genotype(ops: Sequence[str], nodes: int, generator: torch.Generator, keep: int = 2) -> Genotype:
    """A genotype drawn uniformly from the same space: `keep` distinct inputs, non-none ops."""
    real = [o for o in ops if o != "none"]
    genotype = []
    for j in range(nodes):
        inputs = sorted(torch.randperm(2 + j, generator=generator)[:keep].tolist())
        picks = torch.randint(len(real), (len(inputs),), generator=generator).tolist()
        genotype.append([[real[p], i] for p, i in zip(picks, inputs, strict=True)])
    return genotype


def skip_count(genotype: Genotype) -> int:
    """Skip connections kept: many of them is DARTS' known collapse."""
    return sum(op == "skip_connect" for node in genotype for op, _ in node)


def node_name(i: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(i, f"n{i}")


def format_genotype(genotype: Genotype) -> list[str]:
    return [
        f"n{2 + j} = " + " + ".join(f"{op}({node_name(i)})" for op, i in node)
        for j, node in enumerate(genotype)
    ]
