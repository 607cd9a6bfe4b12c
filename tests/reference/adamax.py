"""Adamax (ALGORITHMS.md §8)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record


def adamax(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    eps_mode: str = "in_max",
    weight_decay_mode: str = "l2",
) -> list[dict[str, np.ndarray | float]]:
    """Adamax, ALGORITHMS.md §8 (Kingma & Ba Algorithm 2; torch:adamax.py).

    m_t = β1 m_{t-1} + (1-β1) g; step size lr_t/(1 - β1^t).
    "in_max" (torch/optax): u_t = max(β2 u_{t-1}, |g| + ε), θ ← θ - step·m/u;
    "none" (paper): u_t = max(β2 u_{t-1}, |g|), θ ← θ - step·m/u (0/0 if g has always been 0);
    "denominator": u_t = max(β2 u_{t-1}, |g|), θ ← θ - step·m/(u + ε).
    """
    check_choice("eps_mode", eps_mode, ("in_max", "none", "denominator"))
    beta1, beta2 = betas
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    exp_avg = np.zeros_like(theta)
    exp_inf = np.zeros_like(theta)
    history = []
    for t, (g, eta) in enumerate(zip(grads, etas, strict=True), start=1):
        lr_t = lr * eta
        theta, g = decay(
            theta,
            g,
            weight_decay=weight_decay,
            mode=weight_decay_mode,
            lr_t=lr_t,
            eta_t=eta,
            maximize=maximize,
        )
        exp_avg = beta1 * exp_avg + (1 - beta1) * g
        if eps_mode == "in_max":
            exp_inf = np.maximum(beta2 * exp_inf, np.abs(g) + eps)
            denom = exp_inf
        else:
            exp_inf = np.maximum(beta2 * exp_inf, np.abs(g))
            denom = exp_inf + eps if eps_mode == "denominator" else exp_inf
        theta = theta - (lr_t / (1 - beta1**t)) * exp_avg / denom
        history.append(record(t, theta, exp_avg=exp_avg, exp_inf=exp_inf))
    return history
