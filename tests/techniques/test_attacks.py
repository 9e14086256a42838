"""techniques/attacks.py: FGSM, PGD and the raw gradient step on a really trained model (the
`standard` run of conftest): inside the eps-ball and the pixel range, stronger than nothing,
seeded, and leaving the model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pdl_experiments.techniques.attacks import ATTACKS, AttackSpec, input_gradient, perturb

EPS = 0.1


def _spec(name, eps=EPS, **kw):
    return AttackSpec(name, eps, **kw)


@pytest.mark.parametrize("name", [*ATTACKS, "fgsm_rs"])
def test_attack_stays_in_ball_and_range_and_raises_loss(standard, name):
    _, _, model, x, y = standard
    x_adv = perturb(model, x, y, _spec(name), torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # fgsm and pgd by construction, grad because adv.grad_normalize=linf (the default).
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert (x_adv - x).abs().max() > EPS / 2  # it did move
    with torch.no_grad():
        clean, attacked = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    assert attacked > clean


def test_pgd_at_least_as_strong_as_fgsm_and_seeded(standard):
    _, _, model, x, y = standard
    gen = lambda: torch.Generator().manual_seed(1)
    x_pgd = perturb(model, x, y, _spec("pgd"), gen())
    assert torch.equal(x_pgd, perturb(model, x, y, _spec("pgd"), gen()))
    x_fgsm = perturb(model, x, y, _spec("fgsm"))
    with torch.no_grad():
        assert F.cross_entropy(model(x_pgd), y) >= F.cross_entropy(model(x_fgsm), y)
    assert _spec("pgd").step_size == pytest.approx(2.5 * EPS / 10)
    assert _spec("pgd", pgd_step_size=0.03).step_size == 0.03


def test_raw_gradient_step_is_the_course_formula(standard):
    _, _, model, x, y = standard
    model.eval()
    g, _ = input_gradient(model, x, y)
    x_adv = perturb(model, x, y, _spec("grad", grad_normalize="none"))
    assert torch.allclose(x_adv, (x + EPS * g).clamp(0, 1))
    # The raw step's size follows the loss, not eps: confident samples barely move while
    # misclassified ones move far (why adv.grad_normalize exists).
    moved = (x_adv - x).flatten(1).abs().amax(1)  # (B,)
    assert moved.min() < EPS / 10 < moved.max() / 10


@pytest.mark.parametrize("name", ATTACKS)
def test_mode_restored_and_no_param_grads(standard, name):
    _, _, model, x, y = standard
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for train in (True, False):
        model.train(train)
        model.zero_grad(set_to_none=True)
        stats = bn.running_mean.clone()
        perturb(model, x, y, _spec(name))
        assert all(m.training == train for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(bn.running_mean, stats)  # attacked in eval mode: BN untouched
    # A mixed state (one BN frozen by the user) comes back as it was.
    model.train()
    bn.eval()
    perturb(model, x, y, _spec(name))
    assert model.training and not bn.training
    # ... also when the attack fails half-way.
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        perturb(model, x, y[:3], _spec(name))
    assert model.training and not bn.training
    # Gradients already accumulated by a training step are left exactly as they were.
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    perturb(model, x, y, _spec(name))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


def test_fgsm_rs_is_one_signed_step_from_a_random_start(standard):
    """Wong et al.'s FGSM: start uniform in the eps-ball, step 1.25 eps, project: not FGSM's
    image, and a different one for another start."""
    _, _, model, x, y = standard
    a = perturb(model, x, y, _spec("fgsm_rs"), torch.Generator().manual_seed(0))
    b = perturb(model, x, y, _spec("fgsm_rs"), torch.Generator().manual_seed(1))
    assert not torch.equal(a, b) and not torch.equal(a, perturb(model, x, y, _spec("fgsm")))
    inside = (x > EPS) & (x < 1 - EPS)  # pixels neither clamp nor the start's clip reaches
    assert ((a - x)[inside].abs() > EPS - 1e-6).float().mean() > 0.5  # the 1.25 eps step hits the ball's face


def test_pgd_restarts_keep_the_worst_case_per_example(standard):
    _, _, model, x, y = standard
    from pdl_experiments.techniques.attacks import predict

    one = perturb(model, x, y, _spec("pgd", 0.1, pgd_steps=3), torch.Generator().manual_seed(5))
    many = perturb(model, x, y, _spec("pgd", 0.1, pgd_steps=3, restarts=4), torch.Generator().manual_seed(5))
    # The first restart is the single run (same generator): more restarts only break more.
    assert ((predict(model, one) != y) <= (predict(model, many) != y)).all()
    assert (many - x).abs().max() <= 0.1 + 1e-6
