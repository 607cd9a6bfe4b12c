"""NAdam, Dozat momentum schedule (torch/Keras) or constant μ (optax) (ALGORITHMS.md §9, §21)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record


def nadam(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    maximize: bool = False,
    weight_decay_mode: str = "l2",
    mu_schedule: str = "dozat",
) -> list[dict[str, np.ndarray | float]]:
    """NAdam, ALGORITHMS.md §9 (torch:nadam.py form) and §21.

    "dozat": μ_t = β1(1 - 0.5·0.96^(t ψ)), ψ = momentum_decay; "constant" (optax): μ_t = β1.
    mu_product_t = Π_{i≤t} μ_i; m, v are Adam's EMAs (plain β1, β2);
    denom = sqrt(v_t/(1 - β2^t)) + ε;
    θ ← θ - lr_t (1 - μ_t)/(1 - mu_product_t) · g/denom
          - lr_t μ_{t+1}/(1 - mu_product_t μ_{t+1}) · m/denom.
    With "constant" this is lr_t [(1-β1)/(1-β1^t) g + β1/(1-β1^{t+1}) m]/denom.
    """
    check_choice("mu_schedule", mu_schedule, ("dozat", "constant"))
    beta1, beta2 = betas

    def mu(step: int) -> float:
        if mu_schedule == "constant":
            return beta1
        return beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))

    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    exp_avg = np.zeros_like(theta)
    exp_avg_sq = np.zeros_like(theta)
    mu_product = 1.0
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
        mu_t, mu_next = mu(t), mu(t + 1)
        mu_product = mu_product * mu_t
        exp_avg = beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        denom = np.sqrt(exp_avg_sq / (1 - beta2**t)) + eps
        theta = (
            theta
            - lr_t * (1 - mu_t) / (1 - mu_product) * g / denom
            - lr_t * mu_next / (1 - mu_product * mu_next) * exp_avg / denom
        )
        step_record = record(t, theta, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        step_record["mu_product"] = float(mu_product)
        history.append(step_record)
    return history
