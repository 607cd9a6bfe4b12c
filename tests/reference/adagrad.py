"""AdaGrad, torch form (ALGORITHMS.md §3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record


def adagrad(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    weight_decay_mode: str = "l2",
    eps_mode: str = "outside",
) -> list[dict[str, np.ndarray | float]]:
    """AdaGrad, ALGORITHMS.md §3 (torch:adagrad.py form).

    sum_0 = initial_accumulator_value; clr_t = lr_t/(1 + (t-1)·lr_decay);
    sum_t = sum_{t-1} + g_t²; θ ← θ - clr_t g_t/(sqrt(sum_t) + ε) (ε outside the sqrt).
    Decoupled weight decay modes scale by lr_t (or η_t), not by clr_t.
    eps_mode "inside" (optax scale_by_rss): θ ← θ - clr_t g_t·rsqrt(sum_t + ε) where
    sum_t > 0, and θ unchanged where sum_t = 0.
    """
    check_choice("eps_mode", eps_mode, ("outside", "inside"))
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    state_sum = np.full_like(theta, initial_accumulator_value)
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
        clr = lr_t / (1 + (t - 1) * lr_decay)
        state_sum = state_sum + g * g
        if eps_mode == "outside":
            theta = theta - clr * g / (np.sqrt(state_sum) + eps)
        else:
            scale = np.where(
                state_sum > 0, 1 / np.sqrt(np.where(state_sum > 0, state_sum, 1) + eps), 0.0
            )
            theta = theta - clr * g * scale
        history.append(record(t, theta, sum=state_sum))
    return history
