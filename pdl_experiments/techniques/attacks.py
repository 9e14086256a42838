"""Adversarial attacks: find a small shift of the input that increases the loss.

All three start from the gradient of the loss with respect to the *input*,
g = dl/dx, which costs one backward pass through a trained, fixed network:

* `grad` — the course's step x' = x + eps * g. The raw gradient's size depends on the
  model and on how confident it is (a well-classified sample has g ~ 0), so eps means
  nothing by itself; `grad_normalize` rescales g per sample so that it does.
* `fgsm` — x' = x + eps * sign(g): the best step of L-inf size eps for a loss that is
  linear around x (Goodfellow et al., 2015).
* `pgd` — FGSM iterated in small steps from a random point of the eps-ball, projected
  back onto the ball after each step (Madry et al., 2018): the strong attack a defence
  has to be judged by. With `restarts` > 1 it starts again from fresh random points and
  keeps, per example, the worst case over the restarts (a misclassified iterate first).
* `fgsm_rs` — FGSM from a random point of the eps-ball with a step of 1.25 * eps,
  projected back onto the ball (Wong et al., 2020, "Fast is better than free"): a
  training attack (one gradient, like FGSM) that does not collapse into catastrophic
  overfitting the way FGSM from the clean image does. Not among the evaluated attacks.

Images are in [0, 1] and every model normalises its input itself, so eps is in pixel
units and adversarial images are clamped back to [0, 1]. The attacked model is put in
eval mode (BN uses its running statistics and does not update them; dropout is off) and
its previous mode is restored afterwards, even when the attack fails. Gradients are taken
with `torch.autograd.grad` with respect to the input only: the parameters' `.grad` (and
any optimizer step in progress around an attack) are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..data import as_float

ATTACKS = ("grad", "fgsm", "pgd")  # the evaluated ones (white-box curves); fgsm_rs trains only
RS_STEP = 1.25  # fgsm_rs: step size in units of eps (Wong et al., 2020)


@dataclass(frozen=True)
class AttackSpec:
    name: str  # grad | fgsm | pgd
    eps: float  # pixel units; the L-inf radius for fgsm and pgd
    grad_normalize: str = "linf"  # grad only: none | linf | l2
    pgd_steps: int = 10
    pgd_step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1  # pgd: random starts; the worst case per example is kept

    @property
    def step_size(self) -> float:
        # 2.5 * eps / steps lets PGD cross the ball more than once (Madry et al.), so a
        # random start near one face can still reach the opposite one.
        return self.pgd_step_size if self.pgd_step_size is not None else 2.5 * self.eps / self.pgd_steps

    def with_eps(self, eps: float) -> AttackSpec:
        return replace(self, eps=float(eps))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration of an attack; every submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dl_i/dx_i for every sample, and the per-sample losses l_i.

    The batch loss is a sum, not a mean, so a sample's gradient is that of its own loss
    and does not shrink with the batch size.
    """
    with torch.enable_grad():  # attacks also run under the trainer's no_grad evaluation
        x = x.detach().requires_grad_(True)
        losses = F.cross_entropy(model(x).float(), y, reduction="none")  # (B,)
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad.detach(), losses.detach()


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))  # (B,) -> (B, 1, 1, 1)


def grad_attack(model: nn.Module, x, y, spec: AttackSpec, generator=None) -> torch.Tensor:
    g, _ = input_gradient(model, x, y)
    flat = g.flatten(1)  # (B, D)
    if spec.grad_normalize == "linf":
        # The largest pixel change is exactly eps: the same budget as FGSM, spent unevenly.
        scale = flat.abs().amax(1)
    elif spec.grad_normalize == "l2":
        # Same L2 length as an FGSM step of size eps (eps * sqrt(D)): a root-mean-square
        # pixel change of eps, though single pixels may move further than eps.
        scale = flat.norm(dim=1) / math.sqrt(flat.shape[1])
    else:  # "none": the raw gradient, as taught
        scale = torch.ones(len(g), device=g.device)
    return (x + spec.eps * g / _per_sample(scale.clamp_min(1e-12), g)).clamp(0, 1)


def fgsm(model: nn.Module, x, y, spec: AttackSpec, generator=None) -> torch.Tensor:
    g, _ = input_gradient(model, x, y)
    return (x + spec.eps * g.sign()).clamp(0, 1)


def fgsm_rs(model: nn.Module, x, y, spec: AttackSpec, generator=None) -> torch.Tensor:
    """FGSM from a uniform random start in the eps-ball, step 1.25 * eps, projected back."""
    eps = spec.eps
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x0 = (x + (2 * noise - 1) * eps).clamp(0, 1)
    g, _ = input_gradient(model, x0, y)
    x_adv = x0 + RS_STEP * eps * g.sign()
    return torch.max(torch.min(x_adv, x + eps), x - eps).clamp(0, 1)


def pgd(model: nn.Module, x, y, spec: AttackSpec, generator=None) -> torch.Tensor:
    """L-inf PGD with random starts; returns each sample's worst case over the restarts:
    a misclassified iterate if any restart found one, else the highest-loss one."""
    best, best_loss, best_wrong = _pgd_once(model, x, y, spec, generator)
    for _ in range(spec.restarts - 1):
        cand, loss, wrong = _pgd_once(model, x, y, spec, generator)
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))  # (B,)
        best[better], best_loss[better], best_wrong[better] = cand[better], loss[better], wrong[better]
    return best


def _pgd_once(model: nn.Module, x, y, spec: AttackSpec, generator=None):
    """One random start: (each sample's highest-loss iterate, its loss, misclassified there)."""
    eps, alpha = spec.eps, spec.step_size
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    best, best_loss = x_adv.clone(), torch.full((len(x),), -math.inf, device=x.device)
    for _ in range(spec.pgd_steps):
        g, loss = input_gradient(model, x_adv, y)
        _keep_best(best, best_loss, x_adv, loss)
        x_adv = x_adv + alpha * g.sign()
        # Projection onto the eps-ball around x, intersected with the valid pixel range.
        x_adv = torch.max(torch.min(x_adv, x + eps), x - eps).clamp(0, 1)
    with torch.no_grad():
        loss = F.cross_entropy(model(x_adv).float(), y, reduction="none")
    _keep_best(best, best_loss, x_adv, loss)
    with torch.no_grad():
        wrong = model(best).argmax(1) != y
    return best, best_loss, wrong


def _keep_best(best, best_loss, x_adv, loss) -> None:
    better = loss > best_loss  # (B,)
    best[better] = x_adv[better]
    best_loss[better] = loss[better]


_ATTACK_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "grad": grad_attack,
    "fgsm": fgsm,
    "pgd": pgd,
    "fgsm_rs": fgsm_rs,
}


def perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial version of the batch x (B, C, H, W) in [0, 1], detached from any graph.

    `generator` drives PGD's random start (the global RNG when None).
    """
    if spec.eps == 0:
        return x.detach().clone()
    with eval_mode(model):
        return _ATTACK_FNS[spec.name](model, x.detach(), y, spec, generator).detach()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(as_float(x)).argmax(1)


def attacked_predictions(
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    batch_size: int,
    generator: torch.Generator | None = None,
    source: nn.Module | None = None,
) -> torch.Tensor:
    """The target's predictions (N,) on adversarial examples crafted on `source`.

    source=None is the white-box case (the attacker has the target's gradients); another
    network is a transfer (black-box) attack through a surrogate.
    """
    source = target if source is None else source
    preds = []
    for i in range(0, len(y), batch_size):
        xb, yb = as_float(x[i : i + batch_size]), y[i : i + batch_size]
        preds.append(predict(target, perturb(source, xb, yb, spec, generator)))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=y.device)
