"""RMSprop, plain / centered / with momentum (ALGORITHMS.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import decay, prepare, record


def rmsprop(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    eps_in_sqrt: bool = False,
    weight_decay_mode: str = "l2",
) -> list[dict[str, np.ndarray | float]]:
    """RMSprop, ALGORITHMS.md §4 (torch:rmsprop.py; eps_in_sqrt=True is the TF/optax placement).

    v_t = α v_{t-1} + (1-α) g²; ṽ = v; centered: ḡ_t = α ḡ_{t-1} + (1-α) g, ṽ = v - ḡ².
    denom = sqrt(ṽ) + ε, or sqrt(ṽ + ε) with eps_in_sqrt.
    μ > 0: b_t = μ b_{t-1} + g/denom, θ ← θ - lr_t b_t; else θ ← θ - lr_t g/denom.
    """
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    square_avg = np.zeros_like(theta)
    grad_avg = np.zeros_like(theta)
    buf = np.zeros_like(theta)
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
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        variance = square_avg
        if centered:
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            variance = square_avg - grad_avg * grad_avg
        denom = np.sqrt(variance + eps) if eps_in_sqrt else np.sqrt(variance) + eps
        state = {"square_avg": square_avg}
        if centered:
            state["grad_avg"] = grad_avg
        if momentum > 0:
            buf = momentum * buf + g / denom
            theta = theta - lr_t * buf
            state["momentum_buffer"] = buf
        else:
            theta = theta - lr_t * g / denom
        history.append(record(t, theta, **state))
    return history
