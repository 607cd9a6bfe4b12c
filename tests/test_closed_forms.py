"""Closed-form checks of ALGORITHMS.md §24b, against adamkit, in float64."""

from __future__ import annotations

import math

import pytest
import torch

import adamkit

G = torch.tensor([3.0, -0.2, 1e-3, -50.0], dtype=torch.float64)
THETA = torch.tensor([0.5, -1.5, 2.0, 0.1], dtype=torch.float64)


def lockstep(*makers, steps=50, lr_at=None):
    """Final params of one optimizer per maker, all fed the same random gradients; with
    ``lr_at``, each group's lr is lr_at(t) and its initial_lr lr_at(0)."""
    params = [THETA.clone().requires_grad_() for _ in makers]
    optimizers = [make([p]) for make, p in zip(makers, params, strict=True)]
    generator = torch.Generator().manual_seed(0)
    for t in range(steps):
        grad = torch.randn(4, generator=generator, dtype=torch.float64)
        for p, optimizer in zip(params, optimizers, strict=True):
            if lr_at is not None:
                optimizer.param_groups[0].update(initial_lr=lr_at(0), lr=lr_at(t))
            p.grad = grad.clone()
            optimizer.step()
    return [p.detach() for p in params]


def one_step(cls, grad=G, **kwargs):
    param = THETA.clone().requires_grad_()
    optimizer = cls([param], **kwargs)
    param.grad = grad.clone()
    optimizer.step()
    return param.detach()


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.5), (0.5, 0.99)])
def test_adam_first_step_is_lr_times_sign(betas):
    """m̂₁ = g₁, v̂₁ = g₁² ⇒ θ₁ = θ₀ − α g₁/(|g₁| + ε) ≈ θ₀ − α·sign(g₁), for any β."""
    lr, eps = 0.01, 1e-8
    expected = THETA - lr * G / (G.abs() + eps)
    torch.testing.assert_close(one_step(adamkit.Adam, lr=lr, betas=betas, eps=eps), expected)
    torch.testing.assert_close(expected, THETA - lr * G.sign(), rtol=0, atol=lr * 1e-5)


def test_adam_efficient_form_first_step():
    """θ₁ = θ₀ − α g₁/(|g₁| + ε̂/sqrt(1−β2))."""
    lr, eps, beta2 = 0.01, 1e-3, 0.999
    expected = THETA - lr * G / (G.abs() + eps / math.sqrt(1 - beta2))
    torch.testing.assert_close(
        one_step(adamkit.Adam, lr=lr, eps=eps, eps_mode="efficient"), expected
    )


def test_adam_eps_forms_coincide_without_eps():
    paper, efficient = lockstep(
        lambda p: adamkit.Adam(p, eps=0.0, eps_mode="paper"),
        lambda p: adamkit.Adam(p, eps=0.0, eps_mode="efficient"),
    )
    torch.testing.assert_close(paper, efficient, rtol=1e-13, atol=0)


def test_adamw_zero_gradient_shrinks_by_exactly_one_minus_lr_lambda_per_step():
    lr, weight_decay, steps = 0.1, 0.5, 30
    param = THETA.clone().requires_grad_()
    optimizer = adamkit.AdamW([param], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        param.grad = torch.zeros_like(param)
        optimizer.step()
    torch.testing.assert_close(
        param.detach(), THETA * (1 - lr * weight_decay) ** steps, rtol=1e-14, atol=0
    )


def test_adam_l2_zero_gradient_moves_by_about_lr_per_step():
    """The L2 gradient λθ is normalised by Adam: each step moves θ by ≈ lr·sign(θ)."""
    lr, steps = 1e-3, 30
    param = THETA.clone().requires_grad_()
    optimizer = adamkit.Adam([param], lr=lr, weight_decay=0.5)
    for _ in range(steps):
        param.grad = torch.zeros_like(param)
        optimizer.step()
    moved = THETA - param.detach()
    torch.testing.assert_close(moved, steps * lr * THETA.sign(), rtol=0.05, atol=0)


def test_decoupled_schedule_decays_by_schedule_multiplier_not_lr():
    """Paper AdamW: θ ← θ(1 − η_t λ) with η_t = lr/initial_lr, whatever the base lr."""
    weight_decay = 0.05
    for base_lr in (1e-3, 1.0):
        param = THETA.clone().requires_grad_()
        optimizer = adamkit.AdamW(
            [param], lr=base_lr, weight_decay=weight_decay, weight_decay_mode="decoupled_schedule"
        )
        optimizer.param_groups[0]["initial_lr"] = base_lr
        expected = THETA.clone()
        for eta in (1.0, 0.5, 0.25):
            optimizer.param_groups[0]["lr"] = base_lr * eta
            param.grad = torch.zeros_like(param)
            optimizer.step()
            expected = expected * (1 - eta * weight_decay)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-14, atol=0)


def test_paper_decay_equals_torch_decay_with_weight_decay_over_lr():
    """Paper λ ≡ torch weight_decay·α: the two AdamW forms coincide under a schedule."""
    lr, paper_lambda = 2e-3, 1e-4
    torch_form, paper_form = lockstep(
        lambda p: adamkit.AdamW(p, weight_decay=paper_lambda / lr),
        lambda p: adamkit.AdamW(
            p, weight_decay=paper_lambda, weight_decay_mode="decoupled_schedule"
        ),
        steps=40,
        lr_at=lambda t: lr * (0.5 + 0.5 * math.cos(math.pi * t / 40)),
    )
    torch.testing.assert_close(torch_form, paper_form, rtol=1e-12, atol=0)


def test_adamax_first_step():
    """Paper: u₁ = |g₁| ⇒ θ₁ = θ₀ − α·sign(g₁); torch: θ₁ = θ₀ − α g₁/(|g₁| + ε)."""
    lr, eps = 2e-3, 1e-8
    torch.testing.assert_close(
        one_step(adamkit.Adamax, lr=lr, eps_mode="none"), THETA - lr * G.sign(), rtol=1e-15, atol=0
    )
    torch.testing.assert_close(
        one_step(adamkit.Adamax, lr=lr, eps=eps), THETA - lr * G / (G.abs() + eps)
    )


def test_nadam_first_step(float64_default):
    """μ₁ = β1(1 − ½·0.96^ψ), μ₂ = β1(1 − ½·0.96^(2ψ)), m₁ = (1−β1)g:
    θ₁ = θ₀ − α[1 + μ₂(1−β1)/(1−μ₁μ₂)]·g/(|g|+ε). (float64 default dtype: torch keeps
    mu_product in the default dtype.)"""
    lr, beta1, psi, eps = 2e-3, 0.9, 4e-3, 1e-8
    mu1 = beta1 * (1 - 0.5 * 0.96**psi)
    mu2 = beta1 * (1 - 0.5 * 0.96 ** (2 * psi))
    factor = 1 + mu2 * (1 - beta1) / (1 - mu1 * mu2)
    expected = THETA - lr * factor * G / (G.abs() + eps)
    torch.testing.assert_close(one_step(adamkit.NAdam, lr=lr), expected, rtol=1e-13, atol=0)


def test_sgd_without_momentum_is_plain_gradient_descent():
    torch.testing.assert_close(one_step(adamkit.SGD, lr=0.1), THETA - 0.1 * G)


def test_sgd_ema_with_bias_correction_equals_adams_first_moment():
    """EMA momentum, bias-corrected, steps by lr·m̂ — Adam's m̂ without the denominator."""
    lr, beta = 0.1, 0.9
    generator = torch.Generator().manual_seed(0)
    param = THETA.clone().requires_grad_()
    optimizer = adamkit.SGD(
        [param], lr=lr, momentum=beta, momentum_form="ema", bias_correction=True
    )
    m, expected = torch.zeros_like(THETA), THETA.clone()
    for t in range(1, 20):
        grad = torch.randn(4, generator=generator, dtype=torch.float64)
        param.grad = grad.clone()
        optimizer.step()
        m = beta * m + (1 - beta) * grad
        expected = expected - lr * m / (1 - beta**t)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-13, atol=0)


def test_adam_without_bias_correction_is_rmsprop_with_momentum_on_v():
    """bias_correction=False: θ −= α m/(sqrt(v)+ε) (Kingma & Ba §6.4)."""
    lr, eps = 0.01, 1e-8
    expected = THETA - lr * (0.1 * G) / ((0.001 * G * G).sqrt() + eps)
    torch.testing.assert_close(one_step(adamkit.Adam, lr=lr, bias_correction=False), expected)


def test_adamw_with_zero_decay_equals_adam_bitwise():
    adam, adamw = lockstep(adamkit.Adam, lambda p: adamkit.AdamW(p, weight_decay=0.0))
    assert torch.equal(adam, adamw)
