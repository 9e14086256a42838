"""techniques/importance.py: the pruning criteria (BN scales paired with their convolutions,
the filter-similarity criterion)."""

from __future__ import annotations

import torch
from torch import nn


def test_bn_scales_pair_every_conv_with_its_norm():
    from hydra.utils import instantiate

    from pdl_experiments.models import BatchNormSpec, build_model
    from pdl_experiments.techniques.importance import bn_scales

    from helpers import compose

    cfg = compose(["model=resnet", "model.width=8"])
    data = instantiate(cfg.dataset, _convert_="all")
    model = build_model(cfg.model, data.info, BatchNormSpec())
    for m in model.modules():  # distinct statistics per layer, so a wrong pairing shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 2.0)
    scales = bn_scales(model, data.train[0][:2])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert set(scales) == set(convs)  # the classifier has no norm after it
    block = model.blocks[2]  # conv1 -> bn1, conv2 -> bn2, shortcut conv -> shortcut bn
    for conv, bn in [
        (block.conv1, block.bn1),
        (block.conv2, block.bn2),
        (block.shortcut[0], block.shortcut[1]),
    ]:
        assert torch.allclose(scales[conv], bn.weight.abs() / (bn.running_var + bn.eps).sqrt())


def test_similarity_criterion_compares_the_filters_themselves():
    """A filter and its negation are opposite features, not near-duplicates; the filter
    closest to the others (their geometric median) ranks least important."""
    import torch_pruning as tp

    from pdl_experiments.techniques.importance import FilterSimilarityImportance

    conv = torch.nn.Conv2d(1, 3, 1, bias=False)
    head = torch.nn.Conv2d(3, 2, 1, bias=False)
    model = torch.nn.Sequential(conv, head)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.1]).view(3, 1, 1, 1))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.rand(1, 1, 2, 2))
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1, 2])
    imp = FilterSimilarityImportance()(group)
    # Distances on signed weights: |1-(-1)| = 2, not 0 as on |w|^2.
    assert torch.allclose(imp, torch.tensor([2 + 0.9, 2 + 1.1, 0.9 + 1.1]))
    assert imp.argmin().item() == 2
    fpgm = tp.importance.FPGMImportance(p=2, group_reduction="first", normalizer=None)(group)
    assert fpgm[0] != imp[0]  # Torch-Pruning's version sees filters 0 and 1 as one
