"""models/norm.py: the course's batch-norm layer against nn.BatchNorm, and the BN switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pdl_experiments.models.norm import BatchNormSpec, CourseBatchNorm, is_norm

C = 4


def _pair(dims: int, momentum: float = 0.1, eps: float = 1e-5):
    """An nn.BatchNorm and a CourseBatchNorm with the same non-trivial gamma and beta."""
    ref = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(C, eps=eps, momentum=momentum)
    course = CourseBatchNorm(C, eps=eps, momentum=momentum)
    gen = torch.Generator().manual_seed(0)
    gamma, beta = torch.rand(C, generator=gen) + 0.5, torch.randn(C, generator=gen)
    with torch.no_grad():
        for m in (ref, course):
            m.weight.copy_(gamma)
            m.bias.copy_(beta)
    return ref, course


def _batches(dims: int, k: int, n: int = 8):
    """k batches, (n, C) or (n, C, 5, 3), off-centre and scaled per channel like real data."""
    gen = torch.Generator().manual_seed(1)
    shape = (n, C) if dims == 1 else (n, C, 5, 3)
    view = (1, C) if dims == 1 else (1, C, 1, 1)
    scale, shift = torch.arange(1.0, C + 1).view(view), torch.arange(C, dtype=torch.float).view(view)
    return [torch.randn(shape, generator=gen) * scale + shift for _ in range(k)]


def _values_per_channel(x: torch.Tensor) -> int:
    return x.numel() // x.shape[1]  # N for (N, C); N * H * W for (N, C, H, W)


@pytest.mark.parametrize("dims", [1, 2])
def test_course_layer_matches_torch_except_running_var(dims):
    ref, course = _pair(dims)
    xs = _batches(dims, k=3)
    for x in xs:  # the same training updates in both layers
        torch.testing.assert_close(course(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(course.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)

    # torch feeds the unbiased batch variance into running_var, the course the biased one:
    # every batch's contribution differs by n/(n-1), while the initial 1 decays alike (0.9^k).
    n, k = _values_per_channel(xs[0]), len(xs)
    decayed_init = 0.9**k
    torch.testing.assert_close(
        ref.running_var - decayed_init, (course.running_var - decayed_init) * n / (n - 1)
    )
    assert not torch.allclose(ref.running_var, course.running_var, rtol=1e-6, atol=0)

    ref.eval(), course.eval()
    x = _batches(dims, k=1, n=5)[0]
    if dims == 1:  # n = 8: an 8/7 factor is large enough to see in the outputs
        assert not torch.allclose(course(x), ref(x), atol=1e-3)
    else:  # n = 8 * 5 * 3 = 120: within a percent
        torch.testing.assert_close(course(x), ref(x), rtol=1e-2, atol=1e-2)
    # ... and it is the only difference: with torch's running_var, eval outputs agree.
    course.load_state_dict(ref.state_dict(), strict=False)
    torch.testing.assert_close(course(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2])
def test_with_momentum_one_running_var_differs_by_exactly_n_over_n_minus_1(dims):
    ref, course = _pair(dims, momentum=1.0)  # running stats = the last batch's
    x = _batches(dims, k=1)[0]
    ref(x), course(x)
    n = _values_per_channel(x)
    dims_ = [0] + list(range(2, x.dim()))
    torch.testing.assert_close(course.running_var, x.var(dim=dims_, unbiased=False))
    torch.testing.assert_close(ref.running_var, course.running_var * n / (n - 1))


def test_running_stats_decay_is_point_nine_old_plus_point_one_batch():
    bn = CourseBatchNorm(1)  # momentum 0.1 by default
    assert (bn.running_mean.item(), bn.running_var.item()) == (0.0, 1.0)  # E = 0, Var = 1
    bn(torch.tensor([[0.0], [4.0]]))  # mu = 2, biased var = 4
    assert bn.running_mean.item() == pytest.approx(0.9 * 0 + 0.1 * 2)  # 0.2
    assert bn.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 4)  # 1.3
    bn(torch.tensor([[1.0], [1.0]]))  # mu = 1, var = 0
    assert bn.running_mean.item() == pytest.approx(0.9 * 0.2 + 0.1 * 1)  # 0.28
    assert bn.running_var.item() == pytest.approx(0.9 * 1.3 + 0.1 * 0)  # 1.17
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    bn.eval()  # inference uses E and Var, not the batch
    y = bn(torch.tensor([[3.0]]))
    assert y.item() == pytest.approx(2.0 * (3.0 - 0.28) / (1.17 + 1e-5) ** 0.5 + 0.5, rel=1e-6)
    assert bn.running_mean.item() == pytest.approx(0.28)  # eval leaves them alone

    ref = nn.BatchNorm1d(1)  # torch: the same decay of the mean, unbiased var (n = 2)
    ref(torch.tensor([[0.0], [4.0]]))
    assert ref.running_mean.item() == pytest.approx(0.2)
    assert ref.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 8)


@pytest.mark.parametrize("impl", ["torch", "course"])
def test_gamma_and_beta_are_learned_like_any_parameter(impl):
    from pdl_experiments.data import DataInfo
    from pdl_experiments.models.plain_deep import PlainDeep

    info = DataInfo(name="t", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,))
    model = PlainDeep(info, BatchNormSpec(True, impl), depth=3, width=8)
    norms = [m for m in model.modules() if is_norm(m)]
    assert len(norms) == 3 and all(isinstance(m, CourseBatchNorm) == (impl == "course") for m in norms)
    params = set(map(id, model.parameters()))
    assert all(id(m.weight) in params and id(m.bias) in params for m in norms)
    assert all(
        name.endswith(("running_mean", "running_var", "num_batches_tracked", "mean", "std"))
        for name, _ in model.named_buffers()
    )  # E and Var are buffers, not learned
    before = [(m.weight.clone(), m.bias.clone()) for m in norms]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    for m in norms:
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
        assert m.bias.grad is not None and m.bias.grad.abs().sum() > 0
    opt.step()
    for m, (w, b) in zip(norms, before, strict=True):
        assert not torch.equal(m.weight, w) and not torch.equal(m.bias, b)


def test_norm_spec_switches_the_layer():
    assert isinstance(BatchNormSpec(False)(C), nn.Identity)
    assert BatchNormSpec(False).bias and not BatchNormSpec(True).bias
    layer = BatchNormSpec(True, "course", momentum=0.3, eps=1e-3)(C)
    assert isinstance(layer, CourseBatchNorm) and (layer.momentum, layer.eps) == (0.3, 1e-3)
    assert isinstance(BatchNormSpec(True, "torch")(C, dims=1), nn.BatchNorm1d)
