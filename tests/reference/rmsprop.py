"""RMSprop, plain / centered / with momentum (ALGORITHMS.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record


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
    momentum_form: str = "torch",
    nesterov: bool = False,
    weight_decay_mode: str = "l2",
) -> list[dict[str, np.ndarray | float]]:
    """RMSprop, ALGORITHMS.md §4 (torch:rmsprop.py; eps_in_sqrt=True is the TF/optax placement).

    v_t = α v_{t-1} + (1-α) g²; ṽ = v; centered: ḡ_t = α ḡ_{t-1} + (1-α) g, ṽ = v - ḡ².
    denom = sqrt(ṽ) + ε, or sqrt(ṽ + ε) with eps_in_sqrt.
    μ > 0, torch's form: b_t = μ b_{t-1} + g/denom, θ ← θ - lr_t b_t; else θ ← θ - lr_t g/denom.

    momentum_form="sutskever" is optax's rmsprop: chain(scale_by_rms, scale_by_learning_rate,
    trace(μ, nesterov)): the update entering the trace is u_t = -lr_t g/denom, the trace
    τ_t = u_t + μ τ_{t-1}, and θ ← θ + τ_t, or θ ← θ + u_t + μ τ_t with nesterov. The buffer
    kept is b_t = -τ_t. With torch's form nesterov steps θ ← θ - lr_t (g/denom + μ b_t).
    """
    check_choice("momentum_form", momentum_form, ("torch", "sutskever"))
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
        if momentum > 0 and momentum_form == "sutskever":
            u = -lr_t * g / denom
            trace = u - momentum * buf  # buf holds -τ_{t-1}
            theta = theta + (u + momentum * trace if nesterov else trace)
            buf = -trace
            state["momentum_buffer"] = buf
        elif momentum > 0:
            buf = momentum * buf + g / denom
            theta = theta - lr_t * (g / denom + momentum * buf if nesterov else buf)
            state["momentum_buffer"] = buf
        else:
            theta = theta - lr_t * g / denom
        history.append(record(t, theta, **state))
    return history
